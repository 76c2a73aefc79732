"""A personal identity code sent in any string of any request reaches no database and no log.

Generated from the services' own OpenAPI documents, like the access matrix: for every operation of
every service, every string it takes (path and query parameters, and every string field of its body
at any depth) is sent in turn holding a HETU (cycling through century signs, lower case, Unicode
dashes, spaces and full-width digits), the rest of the request being valid and aimed at real
resources. Each is refused with 422 ``personal_identity_code``. Then every table of every
service's database and every line of every service's log is searched: zero hits.

The four services run as processes on PostgreSQL and RabbitMQ (the ``system`` fixture)."""
from __future__ import annotations

import itertools
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.manifest import NAMES
from seteli_shared.privacy import contains_personal_identity_code
from seteli_shared.testing import eventually

pytestmark = pytest.mark.e2e
FUNDER = "091"
VARIANTS = itertools.cycle([
    "131052-308T", "ref 131052-308T x", "010101a123n", "010101Y123N", "131052\u2010308t", "010101A123N",
    "asiakas 131052 - 308T", "010101B123N", "010101C123N", "010101D123N", "010101E123N", "010101F123N",
    "010101X123N", "010101W123N", "010101V123N", "010101U123N", "\uff11\uff13\uff11\uff10\uff15\uff12-308T",
    "150899+2347",
])
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
    return {"provider": provider, "voucher": voucher, "code": code, "login": login, "charge": charge}


async def _database_hits(url: str) -> list[str]:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        hits = []
        for table in tables:
            for row in await conn.fetch(f'SELECT t::text AS row FROM "{table}" t'):
                if contains_personal_identity_code(row["row"]):
                    hits.append(f"{table}: {row['row'][:200]}")
        return hits
    finally:
        await conn.close()


async def test_a_personal_identity_code_in_any_string_of_any_request_is_stored_and_logged_nowhere(system):  # noqa: ANN001
    ids = await make_world(system)
    samples = Samples(ids)
    sent, refused_otherwise = 0, []
    for service in NAMES:
        client = system.client(service, headers=OPERATOR)
        doc = (await client.get("/openapi.json")).json()
        for method, url, query, body, where in cases(doc, samples):
            r = await client.request(method.upper(), url, params=query, json=body)
            sent += 1
            reason = r.json().get("error", {}).get("reason") if r.headers.get("content-type", "").startswith(
                "application/json") else None
            if (r.status_code, reason) != (422, "personal_identity_code"):
                refused_otherwise.append(f"{service} {method.upper()} {url} [{where}] -> {r.status_code} {r.text[:200]}")
    assert not refused_otherwise, "\n".join(refused_otherwise)
    assert sent >= 60, f"only {sent} requests: the documents list fewer strings than expected"

    hits = []
    for service, url in system.databases.items():
        hits += [f"{service} {h}" for h in await _database_hits(url)]
    assert hits == [], "\n".join(hits)
    log_hits = [line[:300] for line in system.log_text().splitlines() if contains_personal_identity_code(line)]
    assert log_hits == [], "\n".join(log_hits)
