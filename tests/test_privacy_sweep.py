"""A personal identity code, written in any of the ways people and programs write one, sent in every input of
the running system, reaches no database, log or queue, and no input gives a 5xx.

Generated from the services' own OpenAPI documents, like the access matrix: for every operation of every
service, every string it takes (path and query parameters, and every string field of its body at any depth,
and an unknown field's name) is sent in turn holding a code, and so is every request header a service keeps or
logs (``web.CHECKED_HEADERS``: ``Idempotency-Key``, ``X-Correlation-ID``, ``X-Request-ID``, ``User-Agent``,
``Referer``, ``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``...), the rest of the request being valid and
aimed at real resources. The codes cycle through the issue's spellings (a space or no-break space for the sign,
glued to letters, no century sign, the 2023 signs, lower case, full-width digits, dash variants, zero-width
characters). Each request is refused with 422 ``personal_identity_code``. Then: CSV cells and header rows of a
bulk upload, a client's feedback text, and decisions published on the bus by a funder's case system (a code
in the data, the envelope, the AMQP properties and headers). Finally the services are stopped and every table
of every service's database, every line of every service's log and every message left in the namespace's
queues (dead-letter queues and the case system's reply queue included) is searched with the guard's own
matcher, JSON escapes undone: zero codes. One summary line gives the figures.

The four services run as processes on PostgreSQL and RabbitMQ (the ``system`` fixture)."""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

import aio_pika
import asyncpg
import httpx
import pytest

from seteli_shared import broker
from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.ids import new_id
from seteli_shared.manifest import NAMES
from seteli_shared.privacy import contains_personal_identity_code, find_in
from seteli_shared.testing import eventually
from seteli_shared.web import CHECKED_HEADERS

pytestmark = pytest.mark.e2e
FUNDER = "091"
#: the issue's spellings first (a space or no-break space for the sign, glued, no sign, 2023 signs, lower case,
#: full-width), then the older ones
SPELLINGS = [
    "131052 308T", "131052\u00a0308T", "x131052-308Ty", "131052308T", "010101B123N", "010101a123n",
    "\uff11\uff13\uff11\uff10\uff15\uff12\uff13\uff10\uff18\uff34", "HETU131052308T", "ab010101c123n-x",
    "131052_308t.", "010101D123N", "010101E123N", "010101F123N", "010101U123N", "010101V123N", "010101W123N",
    "010101X123N", "010101Y123N", "131052-308T", "ref 131052-308T x", "131052\u2010308t", "131052\u2212308T",
    "asiakas 131052 - 308T", "131052\u200b-308T", "\uff11\uff13\uff11\uff10\uff15\uff12-308T", "150899+2347",
]
VARIANTS = itertools.cycle(SPELLINGS)
#: what a header can carry (Latin-1 bytes; the no-break space and full-width forms as UTF-8 bytes)
HEADER_VARIANTS = itertools.cycle(SPELLINGS)
WRITE = {"post", "put", "patch", "delete"}


def bearer(roles: list[str], **claims: Any) -> dict:
    return {"Authorization": f"Bearer {mint('sweep', roles, **claims)}"}


OPERATOR = bearer(["operator"])


class Samples:
    """Valid values for the fields the APIs take, aimed at the resources made for this test."""

    def __init__(self, ids: dict[str, str]):
        today = date.today()
        self.by_name: dict[str, Any] = {
            "funder_id": FUNDER, "provider_id": ids["provider"], "voucher_id": ids["voucher"],
            "charge_id": ids.get("charge", "x"), "settlement_id": "x", "business_id": random_business_id(),
            "iban": "FI2112345600000785", "category": "home_care", "kind": "municipality",
            "voucher_code": ids.get("code", "x"), "client_login_code": ids.get("login", "x"),
            "valid_from": today.isoformat(), "valid_until": (today + timedelta(days=200)).isoformat(),
            "service_date": (today - timedelta(days=1)).isoformat(), "period": "month",
            "contact_email": "kirjaamo@example.fi", "operator_fee_rate": "0.05", "settlement_days": 14,
        }

    def value(self, name: str, schema: dict, doc: dict) -> Any:
        schema = _resolve(schema, doc)
        if name in self.by_name:
            return self.by_name[name]
        if "enum" in schema:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            if key in schema:
                options = [o for o in schema[key] if _resolve(o, doc).get("type") != "null"]
                return self.value(name, options[0], doc) if options else None
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            return {k: self.value(k, v, doc) for k, v in schema.get("properties", {}).items()}
        if kind == "array":
            return [self.value(name, schema.get("items", {}), doc)]
        if kind == "integer":
            return max(1, int(schema.get("minimum", 1)))
        if kind == "number":
            return 1
        if kind == "boolean":
            return True
        fmt = schema.get("format")
        if fmt == "date":
            return date.today().isoformat()
        if fmt == "date-time":
            return datetime.now(timezone.utc).isoformat()
        if schema.get("pattern", "").startswith("^(?!^[-+.]*$)"):  # pydantic's Decimal
            return "1"
        return f"s-{uuid.uuid4().hex[:8]}"


def _resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _string_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Where the strings are in a sample body."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_paths(v, (*path, i))]
    return []


def _with(value: Any, path: tuple, new: str) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _with(value[head], rest, new)}
    return [(_with(v, rest, new) if i == head else v) for i, v in enumerate(value)]


def cases(doc: dict, samples: Samples) -> list[tuple[str, str, dict, Any, str]]:
    """(method, url, query, body, where) for every string of every operation, each holding a HETU."""
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in WRITE | {"get"}:
                continue
            params = op.get("parameters", [])
            path_values = {p["name"]: str(samples.value(p["name"], p.get("schema", {}), doc))
                           for p in params if p["in"] == "path"}
            query = {p["name"]: samples.value(p["name"], p.get("schema", {}), doc)
                     for p in params if p["in"] == "query"}
            query = {k: v for k, v in query.items() if isinstance(v, (str, int)) and k not in ("cursor", "limit")}
            body = None
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = samples.value("body", schema, doc)

            def url(values: dict) -> str:
                return path.format(**values)

            for name in path_values:
                out.append((method, url({**path_values, name: next(VARIANTS)}), query, body, f"path {name}"))
            for name in [p["name"] for p in params if p["in"] == "query"]:
                out.append((method, url(path_values), {**query, name: next(VARIANTS)}, body, f"query {name}"))
            if method in WRITE and body is not None:
                for where in _string_paths(body):
                    out.append((method, url(path_values), query, _with(body, where, next(VARIANTS)),
                                "body " + ".".join(map(str, where))))
                if isinstance(body, dict):  # a HETU as an unknown field's name, too
                    out.append((method, url(path_values), query, {**body, next(VARIANTS): "x"}, "body key"))
    return out


async def make_world(system) -> dict[str, str]:  # noqa: ANN001
    """A funder, an approved provider, a voucher with the provider chosen, and a charge."""
    registry = system.client("registry", headers=OPERATOR)
    r = await registry.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                              "kind": "municipality"})
    assert r.status_code in (200, 201), r.text
    r = await registry.post("/providers", json={"business_id": random_business_id(), "name": "Sweep Oy",
                                                "iban": "FI2112345600000785"})
    assert r.status_code == 201, r.text
    provider = r.json()["id"]
    r = await registry.post(f"/funders/{FUNDER}/rulebooks", json={  # the funder uses the category
        "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
    assert r.status_code in (200, 201), r.text
    r = await registry.post(f"/providers/{provider}/approvals", json={"funder_id": FUNDER, "category": "home_care"})
    assert r.status_code == 201, r.text
    dm = bearer(["funder_decision_maker"], funder_id=FUNDER)
    vouchers = system.client("vouchers", headers=dm)
    today = date.today()
    decision = {"decision_ref": f"SW-{uuid.uuid4().hex[:8]}", "client_ref": f"c-{uuid.uuid4().hex[:8]}",
                "category": "home_care", "units_per_period": "20", "value_per_unit_cents": 2500,
                "valid_from": (today - timedelta(days=30)).isoformat(),
                "valid_until": (today + timedelta(days=300)).isoformat()}

    async def issued():  # noqa: ANN202  (vouchers learns of the funder from the bus)
        r = await vouchers.post("/vouchers", json=decision)
        return r if r.status_code == 201 else None

    r = await eventually(issued)
    voucher, code, login = r.json()["id"], r.json()["voucher_code"], r.json()["client_login_code"]

    async def chosen():  # noqa: ANN202
        r = await vouchers.post(f"/vouchers/{voucher}/provider", json={"provider_id": provider})
        return r.status_code == 200

    await eventually(chosen)
    payments = system.client("payments", headers=bearer(["provider_charger"], provider_id=provider))

    async def charged():  # noqa: ANN202
        r = await payments.post("/charges", json={"voucher_id": voucher, "provider_reference": "sweep-1",
                                                  "service_date": (today - timedelta(days=1)).isoformat(),
                                                  "units": "1"})
        return r if r.status_code == 201 else None

    charge = (await eventually(charged)).json()["id"]
    r = await system.client("vouchers").post("/client-sessions", json={"voucher_code": code,
                                                                       "client_login_code": login})
    assert r.status_code == 200, r.text
    return {"provider": provider, "voucher": voucher, "code": code, "login": login, "charge": charge,
            "client_token": r.json()["access_token"]}


def header_cases(doc: dict, samples: Samples) -> list[tuple[str, str, dict, Any, str]]:
    """(method, url, query, body, header) for every operation and every header a service keeps or logs: the
    request valid but for that header."""
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in WRITE | {"get"}:
                continue
            params = op.get("parameters", [])
            url = path.format(**{p["name"]: str(samples.value(p["name"], p.get("schema", {}), doc))
                                 for p in params if p["in"] == "path"})
            query = {p["name"]: samples.value(p["name"], p.get("schema", {}), doc)
                     for p in params if p["in"] == "query"}
            query = {k: v for k, v in query.items() if isinstance(v, (str, int)) and k not in ("cursor", "limit")}
            body = None
            if "requestBody" in op and "application/json" in op["requestBody"]["content"]:
                body = samples.value("body", op["requestBody"]["content"]["application/json"]["schema"], doc)
            out += [(method, url, query, body, header) for header in CHECKED_HEADERS]
    return out


def header_value(code: str) -> str | bytes:
    """A header's value as a client sends it: text when it is ASCII, else its UTF-8 bytes."""
    return code if code.isascii() else code.encode("utf-8")


class Tally:
    """What the sweep sent and what came back."""

    def __init__(self) -> None:
        self.tried = self.refused = 0
        self.server_errors: list[str] = []
        self.otherwise: list[str] = []

    def answer(self, r: httpx.Response, what: str, expected: tuple[int, str] = (422, "personal_identity_code")) -> None:
        self.tried += 1
        reason = r.json().get("error", {}).get("reason") if r.headers.get("content-type", "").startswith(
            "application/json") else None
        if r.status_code >= 500:
            self.server_errors.append(f"{what} -> {r.status_code} {r.text[:200]}")
        if (r.status_code, reason) == expected:
            self.refused += 1
        else:
            self.otherwise.append(f"{what} -> {r.status_code} {r.text[:200]}")


# ------------------------------------------------------------------ CSV, feedback, decisions on the bus
CSV_COLUMNS = ("voucher_id", "provider_reference", "service_date", "units", "unit_price", "tariff", "category")


async def send_csv(system, ids: dict, tally: Tally) -> int:  # noqa: ANN001
    """One bulk file with a code in each column of a line (each line refused by itself, naming its column, the
    good line charged), then files whose header row holds a code (refused whole). Returns the lines with a code
    in a cell (each counted as an input of its own; the header rows are counted as the requests they are)."""
    day = (date.today() - timedelta(days=1)).isoformat()
    good = {"voucher_id": ids["voucher"], "provider_reference": "sweep-csv-ok", "service_date": day, "units": "1",
            "unit_price": "", "tariff": "", "category": ""}
    lines, expected = [";".join(CSV_COLUMNS), ";".join(good[c] for c in CSV_COLUMNS)], {}
    for column in CSV_COLUMNS:
        for _ in range(3):
            code = next(VARIANTS).replace(";", " ")
            values = {**good, "provider_reference": f"sweep-csv-{len(lines)}", column: code}
            lines.append(";".join(values[c] for c in CSV_COLUMNS))
            expected[len(lines)] = column
    client = system.client("payments", headers={**bearer(["provider_charger"], provider_id=ids["provider"]),
                                                "content-type": "text/csv"})
    r = await client.post("/charges/bulk", content=("\n".join(lines) + "\n").encode())
    tally.tried += len(expected)  # each line is an input of its own
    if r.status_code >= 500:
        tally.server_errors.append(f"csv cells -> {r.status_code}")
    assert r.status_code == 200, r.text
    by_line = {x["line"]: x for x in r.json()["results"]}
    assert by_line[2]["status"] == "accepted", by_line[2]
    for line, column in expected.items():
        got = by_line[line]
        assert (got["status"], got["reason"], (got.get("details") or {}).get("fields")) == (
            "refused", "personal_identity_code", [column]), (line, column, got)
        assert got["provider_reference"] in (None, f"sweep-csv-{line - 1}")
    tally.refused += len(expected)
    for _ in range(6):
        code = next(VARIANTS).replace(";", " ")
        r = await client.post("/charges/bulk", content=f"voucher_id;{code};service_date;units\n{ids['voucher']};"
                                                     f"x;{day};1\n".encode())
        tally.answer(r, f"csv header {code!a}")
    return len(expected)


async def send_feedback(system, ids: dict, tally: Tally) -> int:  # noqa: ANN001
    client = system.client("reporting", headers={"Authorization": f"Bearer {ids['client_token']}"})
    for code in SPELLINGS:
        tally.answer(await client.post("/feedback", json={"rating": 4, "text": f"kiitos, {code}"}),
                     f"feedback text {code!a}")
    return len(SPELLINGS)


def decision(funder: str, where: str, code: str) -> tuple[dict, dict]:
    """A grant decision of the funder's case system with the code in one place: (envelope, AMQP properties)."""
    today = date.today()
    ref = f"SWB-{new_id()[:8]}"
    data = {"funder_id": funder, "decision_ref": code if where == "decision_ref" else ref, "decision_version": 1,
            "action": "grant", "client_ref": code if where == "client_ref" else "asiakas-sweep",
            "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
            "valid_from": today.isoformat(), "valid_until": (today + timedelta(days=200)).isoformat()}
    envelope = {"specversion": "1.0", "id": new_id(), "source": f"/funder-{funder}/case-system",
                "type": "fi.seteli.decision.v1", "time": datetime.now(timezone.utc).isoformat(),
                "datacontenttype": "application/json", "subject": code if where == "subject" else ref, "data": data}
    if where == "extension":
        envelope["note"] = code
    props: dict = {"message_id": code if where == "message_id" else envelope["id"],
                   "correlation_id": code if where == "correlation_id" else None,
                   "headers": {"x-case": code} if where == "header" else {}}
    return envelope, props


DECISION_PLACES = ("client_ref", "decision_ref", "subject", "extension", "message_id", "correlation_id", "header")


async def send_decisions(system, amqp_url: str) -> tuple[int, str | None]:  # noqa: ANN001
    """Decisions with a code in each place, published as the funder's case system (its own broker user, made
    with rabbitmqctl when the broker is the local one; else as the test's own user, whom vouchers refuses
    without a reply). Waits until vouchers has dead-lettered each. Returns (published, reply queue or None)."""
    ns = system.namespace
    url, user, reply_queue = amqp_url, None, None
    admin = await aio_pika.connect(amqp_url)
    try:
        if shutil.which("rabbitmqctl") and "TEST_AMQP_URL" not in os.environ:
            await (await admin.channel()).declare_exchange(f"{ns}.decision-replies", aio_pika.ExchangeType.TOPIC,
                                                           durable=True)
            user = await asyncio.to_thread(broker.add_funder_system, FUNDER, "pw-sweep", ns, "/",
                                           system.broker_user_prefix)
            u = urlparse(amqp_url)
            url = f"amqp://{user}:pw-sweep@{u.hostname}:{u.port or 5672}/"
            reply_queue = f"{ns}.decision-replies.{FUNDER}"
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(f"{ns}.decisions", ensure=False)
            sent = 0
            for where in DECISION_PLACES:
                for _ in range(2):
                    code = next(VARIANTS)
                    envelope, props = decision(FUNDER, where, code)
                    await exchange.publish(aio_pika.Message(
                        json.dumps(envelope, ensure_ascii=False).encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/cloudevents+json; charset=utf-8", type="fi.seteli.decision.v1",
                        user_id=user, **props), f"decision.{FUNDER}", mandatory=True, timeout=10)
                    sent += 1
        finally:
            await connection.close()

        async def all_dead_lettered() -> bool:
            dlq = await (await admin.channel()).declare_queue(f"{ns}.vouchers.decisions.dlq", passive=True)
            return dlq.declaration_result.message_count >= sent

        await eventually(all_dead_lettered, timeout=60)
        if reply_queue:
            async def all_answered() -> bool:
                q = await (await admin.channel()).declare_queue(reply_queue, passive=True)
                return q.declaration_result.message_count >= sent

            await eventually(all_answered, timeout=60)
    finally:
        await admin.close()
    return sent, user


# ------------------------------------------------------------------ what is left afterwards
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def holds_code(text: str) -> bool:
    """The guard's own matcher over the text and over the text with its JSON escapes undone."""
    return contains_personal_identity_code(text) or (
        "\\u" in text and contains_personal_identity_code(_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)))


def stop_services(system) -> None:  # noqa: ANN001
    """Stop the services (their logs then complete, their queues still), as the fixture will."""
    for p in system.procs.values():
        p.terminate()
    for p in system.procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def namespace_queues(system, reply_queue: str | None) -> list[str]:  # noqa: ANN001
    """Every queue of the namespace: listed by the local broker's rabbitmqctl when there is one, else the ones
    the system declares (the services' queues, their further consumers' and the dead-letter queues)."""
    ns = system.namespace
    known = [f"{ns}.{s}" for s in NAMES] + [f"{ns}.vouchers.decisions"]
    known += [f"{q}.dlq" for q in known] + ([reply_queue] if reply_queue else [])
    if shutil.which("rabbitmqctl") and "TEST_AMQP_URL" not in os.environ:
        listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "--no-table-headers"],
                                capture_output=True, text=True, timeout=60).stdout.split()
        known += [q for q in listed if q.startswith(f"{ns}.")]
    return list(dict.fromkeys(known))


async def queue_hits(amqp_url: str, queues: list[str]) -> tuple[int, list[str], list]:
    """Every message left in the queues (the services are stopped; the namespace is deleted next), searched:
    body, properties and headers. Returns (messages read, hits, the messages as (queue, headers, body))."""
    connection = await aio_pika.connect(amqp_url)
    read, hits, seen = 0, [], []
    try:
        for name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                read += 1
                body = message.body.decode("utf-8", "replace")
                seen.append((name, dict(message.headers or {}), body))
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                texts = [body, message.message_id, message.correlation_id, message.type, message.app_id,
                         json.dumps({k: str(v) for k, v in (message.headers or {}).items()}, ensure_ascii=False)]
                if any(t and holds_code(t) for t in texts) or (parsed is not None and find_in(parsed)):
                    hits.append(f"{name}: {body[:200]}")
    finally:
        await connection.close()
    return read, hits, seen


def refused_decisions(seen: list, ns: str) -> tuple[int, int]:
    """(decisions dead-lettered as personal_identity_code without their body, rejections answered with it)."""
    dead = sum(1 for queue, headers, body in seen if queue == f"{ns}.vouchers.decisions.dlq"
               and headers.get("x-seteli-reason") == "personal_identity_code" and '"removed"' in body)
    answered = sum(1 for queue, _headers, body in seen if queue == f"{ns}.decision-replies.{FUNDER}"
                   and json.loads(body).get("data", {}).get("reason") == "personal_identity_code")
    return dead, answered




async def _database_hits(url: str) -> tuple[int, list[str]]:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        rows, hits = 0, []
        for table in tables:
            for row in await conn.fetch(f'SELECT t::text AS row FROM "{table}" t'):
                rows += 1
                if holds_code(row["row"]):
                    hits.append(f"{table}: {row['row'][:200]}")
        return rows, hits
    finally:
        await conn.close()


async def test_a_personal_identity_code_in_any_input_is_refused_and_found_nowhere_afterwards(
        system, amqp_url):  # noqa: ANN001
    reply_queue = f"{system.namespace}.decision-replies.{FUNDER}"
    funder_user = None
    assert holds_code(json.dumps({"x": "131052\u00a0308T"})), "the search sees through JSON escapes"
    try:
        ids = await make_world(system)
        samples = Samples(ids)
        tally = Tally()
        for service in NAMES:
            client = system.client(service, headers=OPERATOR)
            doc = (await client.get("/openapi.json")).json()
            for method, url, query, body, where in cases(doc, samples):
                r = await client.request(method.upper(), url, params=query, json=body)
                tally.answer(r, f"{service} {method.upper()} {url} [{where}]")
            for method, url, query, body, header in header_cases(doc, samples):
                code = next(HEADER_VARIANTS)
                r = await client.request(method.upper(), url, params=query, json=body,
                                         headers={header: header_value(code)})
                tally.answer(r, f"{service} {method.upper()} {url} [header {header} {code!a}]")
                if r.status_code == 422:
                    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["header", header], r.text
        assert not tally.otherwise, "\n".join(tally.otherwise)
        assert tally.tried >= 1000, f"only {tally.tried} requests: the documents list fewer inputs than expected"
        csv_cells = await send_csv(system, ids, tally)
        await send_feedback(system, ids, tally)
        decisions, funder_user = await send_decisions(system, amqp_url)
        assert not tally.otherwise, "\n".join(tally.otherwise)

        stop_services(system)
        rows, hits = 0, []
        for service, url in system.databases.items():
            n, found = await _database_hits(url)
            rows += n
            hits += [f"{service} {h}" for h in found]
        log_lines = system.log_text().splitlines()
        hits += [f"log: {line[:300]}" for line in log_lines if holds_code(line)]
        server_errors = tally.server_errors + [line[:300] for line in log_lines if re.search(
            r'"status": 5\d\d|http\.unexpected_error|Traceback', line)]
        messages, found, seen = await queue_hits(amqp_url, namespace_queues(system, reply_queue))
        hits += found
        dead, answered = refused_decisions(seen, system.namespace)
        print(f"\nprivacy sweep: {tally.tried + decisions} inputs tried ({tally.tried - csv_cells} HTTP requests: "
              f"every string, header, CSV header row and feedback text; {csv_cells} CSV cells; {decisions} decisions "
              f"on the bus), "
              f"{tally.refused + dead} refused as personal_identity_code ({dead} decisions dead-lettered without their "
              f"bodies, {answered} of them answered to the case system); {len(server_errors)} 5xx seen; afterwards "
              f"{rows} database rows, {len(log_lines)} log lines and {messages} queued messages searched: "
              f"{len(hits)} codes found")
        assert server_errors == [], "\n".join(server_errors)
        assert hits == [], "\n".join(hits)
        assert dead == decisions and answered == (decisions if funder_user else 0), (dead, answered, decisions)
    finally:  # what the system fixture does not know of: the case system's user and reply queue
        if funder_user:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", funder_user], capture_output=True, timeout=60)
        connection = await aio_pika.connect(amqp_url)
        try:
            await (await connection.channel()).queue_delete(reply_queue)
        except aio_pika.exceptions.AMQPError:
            pass
        finally:
            await connection.close()
