"""Service decisions from funders' case systems on the real RabbitMQ and PostgreSQL: each case system
publishes as its own broker user, the vouchers service consumes ``<ns>.decisions`` and answers on the
funder's own reply queue. Idempotent by (funder, decision_ref, version); refusals are answered and
dead-lettered, and nothing of them is kept but the answer."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import pytest
import sqlalchemy as sa
from sqlmodel import select

from seteli_shared import broker
from seteli_shared.db import make_engine, session_factory, unit_of_work, upgrade_async
from seteli_shared.codes import grouped
from seteli_shared.decisions import DECISION_TYPE, DecisionData, ServiceDecision
from seteli_shared.events import Envelope, FunderRegistered
from seteli_shared.messaging import OutboxMessage
from vouchers.app import create_app
from vouchers.handlers import on_funder_registered
from vouchers.models import Voucher
from vouchers.settings import VouchersSettings

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ,
                                reason="needs the local broker's rabbitmqctl (to create the funders' users)")

ROOT = Path(__file__).resolve().parents[3]
HETU = "131052-308T"  # a valid personal identity code (the check character is right)


def _ctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60).stdout


class Bus:
    """The namespace as the funders' case systems see it."""

    def __init__(self, ns: str, prefix: str, amqp_url: str, app, admin: aio_pika.abc.AbstractConnection):  # noqa: ANN001
        self.ns, self.prefix, self.amqp_url, self.app, self.admin = ns, prefix, amqp_url, app, admin
        self.connections: dict[str, aio_pika.abc.AbstractConnection] = {}

    def url_of(self, funder: str) -> str:
        u = urlparse(self.amqp_url)
        return f"amqp://{self.prefix}funder-{funder}:pw-{funder}@{u.hostname}:{u.port or 5672}/"

    async def connection(self, funder: str) -> aio_pika.abc.AbstractConnection:
        if funder not in self.connections:
            self.connections[funder] = await aio_pika.connect(self.url_of(funder))
        return self.connections[funder]

    async def publish(self, envelope: dict | bytes, *, as_funder: str = "091", routing_funder: str | None = None,
                      headers: dict | None = None) -> str:
        """Publish as ``as_funder``'s case system: persistent, confirmed, mandatory, ``user_id`` set."""
        body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        message_id = envelope["id"] if isinstance(envelope, dict) else str(uuid.uuid4())
        ch = await (await self.connection(as_funder)).channel(publisher_confirms=True, on_return_raises=True)
        exchange = await ch.get_exchange(f"{self.ns}.decisions", ensure=False)
        await exchange.publish(aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id, type=DECISION_TYPE,
            user_id=f"{self.prefix}funder-{as_funder}", headers=headers or {}),
            f"decision.{routing_funder or as_funder}", mandatory=True, timeout=10)
        await ch.close()
        return message_id

    async def reply(self, funder: str = "091", timeout: float = 15.0) -> dict:
        """The next reply on the funder's own reply queue, read as the funder's case system."""
        ch = await (await self.connection(funder)).channel()
        q = await ch.declare_queue(f"{self.ns}.decision-replies.{funder}", passive=True)
        end = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < end:
            got = await q.get(fail=False, no_ack=True)
            if got is not None:
                await ch.close()
                assert got.routing_key == f"reply.{funder}" and got.user_id, "published by the service as itself"
                return json.loads(got.body)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no reply for {funder} in {timeout} s")

    async def no_more_replies(self, funder: str = "091", wait: float = 1.0) -> bool:
        await asyncio.sleep(wait)
        ch = await (await self.connection(funder)).channel()
        q = await ch.declare_queue(f"{self.ns}.decision-replies.{funder}", passive=True)
        got = await q.get(fail=False, no_ack=True)
        await ch.close()
        return got is None

    async def dead_letter(self, timeout: float = 15.0) -> aio_pika.abc.AbstractIncomingMessage:
        ch = await self.admin.channel()
        q = await ch.declare_queue(f"{self.ns}.vouchers.decisions.dlq", passive=True)
        end = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < end:
            got = await q.get(fail=False, no_ack=True)
            if got is not None:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError("nothing dead-lettered")

    @property
    def sessions(self):  # noqa: ANN201
        return self.app.state.runtime.sessions

    async def vouchers(self, funder: str | None = None) -> list[Voucher]:
        async with self.sessions() as s:
            q = select(Voucher) if funder is None else select(Voucher).where(Voucher.funder_id == funder)
            return list((await s.exec(q)).all())

    async def outbox(self, routing_key: str) -> list[dict]:
        async with self.sessions() as s:
            rows = (await s.exec(select(OutboxMessage).where(OutboxMessage.routing_key == routing_key))).all()
            return [json.loads(r.body) for r in rows]

    async def issued(self) -> list[dict]:
        """Each voucher's ``VoucherIssued`` data as the outbox announces it: a ``voucher.issued.v1``'s, or each voucher
        a ``voucher.issued.v2`` lists (with its funder)."""
        out = [e["data"] for e in await self.outbox("voucher.issued.v1")]
        for e in await self.outbox("voucher.issued.v2"):
            out += [{"funder_id": e["data"]["funder_id"], **v} for v in e["data"]["vouchers"]]
        return out

    async def outbox_in_order(self) -> list[tuple[str, dict]]:
        """Every outbox row's routing key and body, in the order written."""
        async with self.sessions() as s:
            rows = (await s.exec(select(OutboxMessage).order_by(OutboxMessage.seq))).all()
            return [(r.routing_key, json.loads(r.body)) for r in rows]

    async def everything_stored(self) -> str:
        """Every row of every table of the service's database, as text."""
        async with self.sessions() as s:
            tables = (await s.execute(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
            out = []
            for t in tables:
                out += [repr(tuple(r)) for r in (await s.execute(sa.text(f'SELECT * FROM "{t}"'))).all()]
            return "\n".join(out)


def decision(funder: str = "091", version: int = 1, action: str = "grant", ref: str | None = None,
             **data) -> dict:  # noqa: ANN003
    today = date.today()
    body = {"funder_id": funder, "decision_ref": ref or f"D-{uuid.uuid4().hex[:10]}", "decision_version": version,
            "action": action, "client_ref": "asiakas-7f3a", "age_band": "75-84",
            "municipality_of_residence": "091"}
    if action == "grant":
        body.update(category="home_care", units_per_period="20", period="month", value_per_unit_cents=2500,
                    valid_from=(today - timedelta(days=10)).isoformat(),
                    valid_until=(today + timedelta(days=300)).isoformat(), rulebook_version="2026.1")
    body.update(data)
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": f"/funder-{funder}/case-system",
            "type": DECISION_TYPE, "time": datetime.now(timezone.utc).isoformat(), "data": body}


@pytest.fixture
async def bus(pg, namespace, amqp_url):  # noqa: ANN001
    prefix = f"{namespace}-"
    settings = VouchersSettings(environment="test", database_url=await pg.create("vouchers"), amqp_url=amqp_url,
                                bus_namespace=namespace, relay_idle_seconds=0.05, broker_user_prefix=prefix)
    app = create_app(settings)
    users: list[str] = []
    admin = await aio_pika.connect(amqp_url)
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(app.router.lifespan_context(app))
            ch = await admin.channel()
            await ch.declare_exchange(f"{namespace}.decision-replies", aio_pika.ExchangeType.TOPIC, durable=True)
            for funder in ("091", "092", "093"):
                users.append(await asyncio.to_thread(broker.add_funder_system, funder, f"pw-{funder}", namespace,
                                                     "/", prefix))
            b = Bus(namespace, prefix, amqp_url, app, admin)
            for funder in ("091", "092"):  # 093 has a case-system user but the registry never announced it
                event = FunderRegistered(funder_id=funder, name=f"Kunta {funder}", kind="municipality",
                                         operator_fee_rate=Decimal("0.05"), registered_at=datetime.now(timezone.utc))
                async with unit_of_work(b.sessions) as session:
                    await on_funder_registered(session, Envelope.wrap(event, "registry"), event)
            yield b
            for c in b.connections.values():
                await c.close()
        finally:
            for u in users:
                _ctl("delete_user", u)
            for funder in ("091", "092", "093"):
                await (await admin.channel()).queue_delete(f"{namespace}.decision-replies.{funder}")
            await admin.close()
    left = [line for line in _ctl("list_users").splitlines() if line.startswith(prefix)]
    assert left == [], "the test left users on the shared broker"


# ------------------------------------------------------------------ the contract
def test_the_contract_refuses_fields_it_does_not_know_and_a_grant_needs_its_terms():
    data = decision()["data"]
    assert DecisionData.model_validate(data).decision_version == 1
    assert ServiceDecision.model_validate(decision()).data.action == "grant"
    for bad in ({**data, "diagnosis": "x"}, {**data, "decision_version": 0}, {**data, "action": "pause"},
                {k: v for k, v in data.items() if k != "valid_until"}, {**data, "municipality_of_residence": "91"}):
        with pytest.raises(ValueError):
            DecisionData.model_validate(bad)
    assert DecisionData.model_validate(decision(action="revoke")["data"]).category is None


# ------------------------------------------------------------------ accepted
async def test_a_decision_makes_one_voucher_and_an_accepted_reply_with_the_login_code(bus):  # noqa: ANN001
    d = decision()
    await bus.publish(d)
    reply = await bus.reply()
    assert reply["type"] == "fi.seteli.decision.accepted.v1" and reply["causationid"] == d["id"]
    data = reply["data"]
    assert (data["decision_ref"], data["decision_version"], data["status"], data["outcome"]) == (
        d["data"]["decision_ref"], 1, "issued", "issued")
    assert data["voucher_code"] and data["client_login_code"] and data["voucher_id"]
    [v] = await bus.vouchers()
    assert (v.id, grouped(v.voucher_code), v.decision_version, v.client_ref) == (data["voucher_id"], data["voucher_code"], 1,
                                                                        "asiakas-7f3a")
    [issued] = await bus.outbox("voucher.issued.v1")
    # the decision's statistical attributes reach reporting through the event
    assert (issued["data"]["age_band"], issued["data"]["municipality_of_residence"]) == ("75-84", "091")

    # the client logs in with the code from the reply (the same use case as POST /vouchers)
    import httpx
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bus.app), base_url="http://v") as http:
        r = await http.post("/client-sessions", json={"voucher_code": data["voucher_code"],
                                                       "client_login_code": data["client_login_code"]})
        assert r.status_code == 200, r.text


async def test_a_decision_published_twice_makes_one_voucher(bus):  # noqa: ANN001
    d = decision()
    await bus.publish(d)
    first = (await bus.reply())["data"]
    await bus.publish(d)  # the very same message again: the inbox drops it, no second answer
    again = {**d, "id": str(uuid.uuid4())}  # the case system sends it again as a new message
    await bus.publish(again)
    repeated = (await bus.reply())["data"]
    assert repeated["outcome"] == "repeated" and repeated["voucher_id"] == first["voucher_id"]
    assert repeated["client_login_code"] is None, "the login code is shown once"
    assert await bus.no_more_replies()
    assert len(await bus.vouchers()) == 1 and len(await bus.issued()) == 1

    other = {**d, "id": str(uuid.uuid4()), "data": {**d["data"], "units_per_period": "30"}}
    await bus.publish(other)  # the same version with other terms
    assert (await bus.reply())["data"]["reason"] == "decision_conflict"


async def test_version_2_amends_the_voucher_and_payments_sees_it_and_version_1_is_stale(bus, pg):  # noqa: ANN001
    d1 = decision()
    ref = d1["data"]["decision_ref"]
    await bus.publish(d1)
    issued = (await bus.reply())["data"]
    until = (date.today() + timedelta(days=200)).isoformat()
    await bus.publish(decision(ref=ref, version=2, units_per_period="30", value_per_unit_cents=2700,
                               valid_until=until))
    amended = (await bus.reply())["data"]
    assert (amended["outcome"], amended["decision_version"], amended["voucher_id"]) == ("amended", 2,
                                                                                        issued["voucher_id"])
    [v] = await bus.vouchers()
    assert (v.units_per_period_x100, v.value_per_unit_cents, v.valid_until.isoformat(), v.decision_version) == (
        3000, 2700, until, 2)
    [event] = await bus.outbox("voucher.amended.v1")
    assert event["data"]["decision_version"] == 2 and event["data"]["units_per_period"] == "30.00"

    await bus.publish(d1 | {"id": str(uuid.uuid4())})  # version 1 again, after version 2
    stale = (await bus.reply())["data"]
    assert (stale["reason"], stale["decision_version"]) == ("stale_version", 1)
    assert (await bus.vouchers())[0].decision_version == 2

    # payments' projection applies the amendment, whatever order the events come in
    from payments.projections.handlers import on_voucher_amended, on_voucher_issued
    from payments.models import VoucherView

    url = await pg.create("payments")
    await upgrade_async(ROOT / "services/payments/src/payments/migrations", url)
    engine = make_engine(url)
    try:
        [issued_env] = [Envelope.model_validate(e) for e in await bus.outbox("voucher.issued.v1")]
        amended_env = Envelope.model_validate(event)
        async with unit_of_work(session_factory(engine)) as session:
            await on_voucher_amended(session, amended_env, amended_env.event())
            await on_voucher_issued(session, issued_env, issued_env.event())  # late: older terms
        async with session_factory(engine)() as session:
            view = await session.get(VoucherView, v.id)
            assert (view.units_per_period_x100, view.value_per_unit_cents, view.decision_version) == (3000, 2700, 2)
    finally:
        await engine.dispose()


async def test_revoke_ends_the_voucher(bus, pg):  # noqa: ANN001
    d1 = decision()
    ref = d1["data"]["decision_ref"]
    await bus.publish(d1)
    await bus.reply()
    effective = (date.today() + timedelta(days=5)).isoformat()
    await bus.publish(decision(ref=ref, version=2, action="revoke", effective_from=effective))
    revoked = (await bus.reply())["data"]
    assert (revoked["outcome"], revoked["status"]) == ("revoked", "revoked")
    [v] = await bus.vouchers()
    assert v.status == "revoked" and v.revoked_at is not None and v.revoked_from.isoformat() == effective
    [event] = await bus.outbox("voucher.revoked.v1")
    assert event["data"]["effective_from"] == effective and event["data"]["revoked_at"]
    await bus.publish(decision(ref=ref, version=3, units_per_period="40"))
    assert (await bus.reply())["data"]["reason"] == "voucher_revoked", "a revocation is final"

    from payments.projections.handlers import on_voucher_revoked
    from payments.models import VoucherView

    url = await pg.create("payments")
    await upgrade_async(ROOT / "services/payments/src/payments/migrations", url)
    engine = make_engine(url)
    try:
        env = Envelope.model_validate(event)
        async with unit_of_work(session_factory(engine)) as session:
            await on_voucher_revoked(session, env, env.event())
        async with session_factory(engine)() as session:
            assert (await session.get(VoucherView, v.id)).revoked_from.isoformat() == effective
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ refused
@pytest.mark.parametrize("where", ["client_ref", "extension", "header", "escaped"])
async def test_a_personal_identity_code_anywhere_is_dead_lettered_without_body_and_answered(bus, where, capsys):  # noqa: ANN001
    capsys.readouterr()
    d = decision()
    ref = d["data"]["decision_ref"]
    headers = None
    if where == "client_ref":
        d["data"]["client_ref"] = HETU
    elif where == "extension":
        d["note"] = f"asiakas {HETU}"  # a CloudEvents extension attribute the envelope does not know
    elif where == "header":
        headers = {"x-case": HETU}
    body = json.dumps(d).encode()
    if where == "escaped":
        d["data"]["client_ref"] = HETU
        body = json.dumps(d).replace("-308T", "\\u002d308T").encode()
    await bus.publish(body if where == "escaped" else d, headers=headers)
    reply = (await bus.reply())["data"]
    assert (reply["reason"], reply["decision_ref"], reply["decision_version"]) == (
        "personal_identity_code", ref, 1)
    dead = await bus.dead_letter()
    assert dead.headers["x-seteli-reason"] == "personal_identity_code"
    assert HETU not in dead.body.decode() and "308T" not in json.dumps(_plain(dead.headers))
    assert await bus.vouchers() == []
    stored = await bus.everything_stored()
    assert "308T" not in stored and "asiakas-7f3a" not in stored, "nothing of it is kept but the answer"
    logged = capsys.readouterr()
    assert "308T" not in logged.out + logged.err, "nor logged"


def _plain(value):  # noqa: ANN001, ANN202
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


async def test_an_unknown_field_is_rejected_dead_lettered_and_nothing_is_stored(bus):  # noqa: ANN001
    d = decision(diagnosis="F32.1 masennus")
    await bus.publish(d)
    reply = (await bus.reply())["data"]
    assert (reply["reason"], reply["fields"]) == ("contract_violation", ["data.diagnosis"])
    assert "F32" not in json.dumps(reply) and "masennus" not in json.dumps(reply), "never echoes a value"
    dead = await bus.dead_letter()
    assert dead.headers["x-seteli-reason"].startswith("contract_violation")
    assert await bus.vouchers() == []
    assert "masennus" not in await bus.everything_stored()

    await bus.publish(b"not json at all")
    assert (await bus.reply())["data"]["reason"] == "contract_violation"
    assert (await bus.dead_letter()).headers["x-seteli-reason"].startswith("bad_envelope")


async def test_a_case_system_cannot_issue_for_another_funder(bus):  # noqa: ANN001
    # funder 091's system, data for 092, with its own routing key (the broker refuses decision.092 for it)
    d = decision(funder="092")
    await bus.publish(d, as_funder="091", routing_funder="091")
    reply = (await bus.reply("091"))["data"]
    assert (reply["reason"], reply["funder_id"]) == ("funder_mismatch", "091")
    assert await bus.vouchers() == []
    assert await bus.no_more_replies("092", wait=0.2), "the other funder hears nothing"


async def test_an_unknown_funder_is_rejected(bus):  # noqa: ANN001
    await bus.publish(decision(funder="093"), as_funder="093")
    reply = (await bus.reply("093"))["data"]
    assert reply["reason"] == "unknown_funder"
    assert await bus.vouchers() == []


async def publish_as_administrator(bus, envelope: dict, routing_funder: str) -> None:  # noqa: ANN001
    """A decision on the routing key of ``routing_funder`` from a user no case system is (the admin)."""
    ch = await bus.admin.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await ch.get_exchange(f"{bus.ns}.decisions", ensure=False)
    await exchange.publish(aio_pika.Message(json.dumps(envelope).encode(), message_id=envelope["id"],
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                           f"decision.{routing_funder}", mandatory=True, timeout=10)
    await ch.close()


async def test_a_decision_from_an_unknown_broker_user_is_answered_to_the_routing_keys_funder(bus):  # noqa: ANN001
    """A case-system user the service does not recognise (made under another BROKER_USER_PREFIX, or an
    administrator's publish) no longer vanishes: the funder its routing key names hears why."""
    await publish_as_administrator(bus, decision(), "091")
    reply = (await bus.reply("091"))["data"]
    assert (reply["reason"], reply["funder_id"]) == ("unknown_publisher", "091")
    assert f"{bus.prefix}funder-<funder_id>" in reply["message"], "it says which user name the platform expects"
    assert await bus.vouchers() == []

    await publish_as_administrator(bus, decision(diagnosis="x"), "091")  # broken too: both are said
    reply = (await bus.reply("091"))["data"]
    assert reply["reason"] == "contract_violation" and "funder-<funder_id>" in reply["message"]


async def test_a_decision_nobody_can_be_answered_for_is_dead_lettered_with_the_reason(bus):  # noqa: ANN001
    await publish_as_administrator(bus, decision(funder="094"), "094")  # no reply queue for 094
    dead = await bus.dead_letter()
    assert dead.headers["x-seteli-reason"].startswith("unknown_publisher")
    assert await bus.vouchers() == []


async def test_an_envelope_without_what_cloudevents_requires_is_refused(bus):  # noqa: ANN001
    for attribute in ("id", "specversion", "source"):
        d = decision()
        del d[attribute]
        await bus.publish(json.dumps(d).encode())
        reply = (await bus.reply())["data"]
        assert (reply["reason"], reply["fields"]) == ("contract_violation", [attribute]), attribute
    assert await bus.vouchers() == []


# ------------------------------------------------------------------ the sample publisher
async def test_the_sample_publisher_publishes_and_prints_the_reply(bus):  # noqa: ANN001
    ref = f"SAMPLE-{uuid.uuid4().hex[:8]}"
    cmd = [str(Path(sys.executable).parent / "seteli-publish-decision"), "--amqp-url", bus.url_of("091"),
           "--namespace", bus.ns, "--decision-ref", ref, "--client-ref", "asiakas-9", "--timeout", "20"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    printed = out.decode()
    reply = json.loads(printed[printed.index("{\n"):])["reply"]
    assert reply["type"] == "fi.seteli.decision.accepted.v1" and reply["data"]["decision_ref"] == ref
    assert reply["data"]["client_login_code"]
    [v] = await bus.vouchers()
    assert v.decision_ref == ref


# ------------------------------------------------------------------ a run of decisions at once
def _mixed(refs: dict[str, str]) -> list[dict]:
    """New, repeated, amended, stale, revoked, refused by the rules, refused for a personal identity code, the
    very same message twice: the decisions of ``refs`` A..E, in the order a case system sends them."""
    today = date.today()
    a1 = decision(ref=refs["A"])
    return [
        a1,
        a1,  # the very same message again: the inbox drops it
        a1 | {"id": str(uuid.uuid4())},  # the same decision as a new message: repeated
        decision(ref=refs["A"], version=2, units_per_period="30", value_per_unit_cents=2700),  # amended
        a1 | {"id": str(uuid.uuid4())},  # version 1 after 2: stale
        decision(ref=refs["B"]),  # new
        decision(ref=refs["B"], version=2, action="revoke"),  # revoked in the same run
        decision(funder="092", ref=refs["C"]),  # another funder's decision from 091's system: funder_mismatch
        decision(ref=refs["D"], valid_from=(today - timedelta(days=800)).isoformat()),  # invalid validity
        decision(ref=refs["F"], client_ref=HETU),  # a personal identity code: dead-lettered, answered
        decision(ref=refs["E"]),  # new, after the refused ones
    ]


def _outcome(reply: dict) -> tuple:
    d = reply["data"]
    return (reply["type"], d.get("outcome"), d.get("reason"), d.get("decision_version"), d.get("status"),
            bool(d.get("client_login_code")))


async def _state(bus, refs: dict[str, str]) -> dict:  # noqa: ANN001
    by_ref = {v.decision_ref: v for v in await bus.vouchers()}
    vouchers = {name: (v.status, v.decision_version, v.units_per_period_x100, v.value_per_unit_cents)
                for name, ref in refs.items() if (v := by_ref.get(ref)) is not None}
    events = {}
    names = {ref: name for name, ref in refs.items()}
    events["voucher.issued"] = sorted(names[d["decision_ref"]] for d in await bus.issued() if d["decision_ref"] in names)
    for key in ("voucher.amended.v1", "voucher.revoked.v1"):
        events[key] = sorted(names[e["data"]["decision_ref"]] for e in await bus.outbox(key)
                             if e["data"]["decision_ref"] in names)
    return {"vouchers": vouchers, "events": events}


async def test_a_run_of_mixed_decisions_has_the_outcome_of_one_at_a_time(bus):  # noqa: ANN001
    """The same decisions once one at a time (each reply awaited) and once as one run of the consumer
    (``on_decisions``): every decision gets the same answer, the vouchers and their events are the same;
    two decisions of one voucher in the run are applied in their order."""
    consumer = bus.app.state.runtime.extra_consumers[0]
    runs: list[int] = []
    fold = consumer.batch_handlers[DECISION_TYPE]

    async def counted(session, items):  # noqa: ANN001, ANN202
        runs.append(len(items))
        await fold(session, items)

    consumer.batch_handlers[DECISION_TYPE] = counted

    one_refs = {k: f"ONE-{k}-{uuid.uuid4().hex[:8]}" for k in "ABCDEF"}
    one_msgs = _mixed(one_refs)
    one: list[tuple] = []
    for i, m in enumerate(one_msgs):
        await bus.publish(m)
        if i != 1:  # the very same message again has no answer
            one.append(_outcome(await bus.reply()))
    assert await bus.no_more_replies(wait=0.5)
    assert max(runs) == 1, "one at a time"
    one_state = await _state(bus, one_refs)

    runs.clear()
    consumer.batch_wait = 3.0  # the run's messages join one batch
    run_refs = {k: f"RUN-{k}-{uuid.uuid4().hex[:8]}" for k in "ABCDEF"}
    run_msgs = _mixed(run_refs)
    for m in run_msgs:
        await bus.publish(m)
    replies = [await bus.reply() for _ in range(len(run_msgs) - 1)]
    assert await bus.no_more_replies(wait=0.5)
    consumer.batch_wait = 0.0
    assert runs == [len(run_msgs) - 2], "one run: all but the duplicate message and the refused one"
    # each reply to its decision (the refused one is answered before the run is applied)
    position = {m["id"]: i for i, m in reversed(list(enumerate(run_msgs)))}
    by_position = sorted(replies, key=lambda r: position[r["causationid"]])
    assert [_outcome(r) for r in by_position] == one
    assert [r["data"].get("outcome") or r["data"].get("reason") for r in by_position] == [
        "issued", "repeated", "amended", "stale_version", "issued", "revoked", "funder_mismatch",
        "invalid_validity", "personal_identity_code", "issued"]
    assert await _state(bus, run_refs) == one_state
    assert one_state["vouchers"]["A"][1:3] == (2, 3000) and one_state["vouchers"]["B"][0] == "revoked"
    assert set(one_state["vouchers"]) == {"A", "B", "E"}
    # the run's replies left in delivery order (the outbox's order), the refused one's first
    ordered = [position[r["causationid"]] for r in replies]
    assert ordered[1:] == sorted(ordered[1:]) and ordered[0] == 9


async def test_a_run_of_new_grants_is_announced_in_one_voucher_issued_v2_per_funder(bus):  # noqa: ANN001
    """``ISSUED_EVENTS``: with ``v2`` (the default) a run's new grants are one ``voucher.issued.v2`` listing them in
    the order issued, written before the run's replies, and no v1; with ``both`` that and a v1 each, the v2's vouchers
    the v1 events field for field; with ``v1`` a v1 each, as before. Every voucher once, with its own reply."""
    from seteli_shared.events import VouchersIssued

    consumer = bus.app.state.runtime.extra_consumers[0]
    settings = consumer.bus.settings
    assert settings.issued_events == "v2", "the default"
    consumer.batch_wait = 3.0  # the decisions join one run
    try:
        for events in ("v2", "both", "v1"):
            settings.issued_events = events
            refs = [f"RUN-{events}-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
            msgs = [decision(ref=r, client_ref=f"asiakas-{i}") for i, r in enumerate(refs)]
            for m in msgs:
                await bus.publish(m)
            replies = {(r := await bus.reply())["causationid"]: r for _ in msgs}
            assert [replies[m["id"]]["data"]["outcome"] for m in msgs] == ["issued"] * 6
            rows = [(i, key, body) for i, (key, body) in enumerate(await bus.outbox_in_order())
                    if body["data"].get("decision_ref") in refs
                    or any(v["decision_ref"] in refs for v in body["data"].get("vouchers", ()))]
            many = [(i, body) for i, key, body in rows if key == "voucher.issued.v2"]
            ones = [body["data"] for i, key, body in rows if key == "voucher.issued.v1"]
            reply_at = [i for i, key, _body in rows if key.startswith("decision-replies/")]
            vouchers = {v.decision_ref: v for v in await bus.vouchers() if v.decision_ref in refs}
            if events == "v1":
                assert many == [] and [d["decision_ref"] for d in ones] == refs
                continue
            [(at, body)] = many
            assert at < min(reply_at), "the vouchers are announced before the run's replies"
            event = VouchersIssued.model_validate(body["data"])
            listed = [{"funder_id": "091", **v} for v in body["data"]["vouchers"]]
            assert [d["decision_ref"] for d in listed] == refs, "in the order issued"
            assert [(d["voucher_id"], d["voucher_code"], d["client_ref"]) for d in listed] == [
                (vouchers[r].id, vouchers[r].voucher_code, vouchers[r].client_ref) for r in refs]
            assert [e.voucher_id for e in event.each()] == [d["voucher_id"] for d in listed]
            assert body["type"] == "fi.seteli.voucher.issued.v2" and body["source"] == "/seteli/vouchers"
            if events == "v2":
                assert ones == []
            else:
                assert ones == listed, "v2 lists each voucher as its v1 event says it"
    finally:
        consumer.batch_wait = 0.0
        settings.issued_events = "v2"


# ------------------------------------------------------------------ many decisions in flight (seteli-client)
async def test_a_case_system_decides_many_at_once_and_gets_each_decisions_own_reply(bus):  # noqa: ANN001
    """``CaseSystem.decide_many`` keeps several decisions in flight: every decision gets exactly its own reply,
    in the order given, refusals included; sent again as new messages they are answered ``repeated`` and
    make no second voucher; a publish the broker refuses is reported for that decision, not raised."""
    from seteli_client import CaseSystem, NotPublished, decision_envelope, message_id

    today = date.today()

    def grant(ref: str, **terms) -> dict:  # noqa: ANN003
        return {"decision_ref": ref, "decision_version": 1, "action": "grant", "client_ref": "asiakas-m1",
                "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
                "valid_from": today.isoformat(), "valid_until": (today + timedelta(days=300)).isoformat(), **terms}

    refs = [f"MANY-{message_id()[:8]}-{i:03d}" for i in range(40)]
    bad_validity = grant(f"MANY-{message_id()[:8]}-V", valid_from=(today - timedelta(days=800)).isoformat())
    broken = grant(f"MANY-{message_id()[:8]}-X", diagnosis="x")  # breaks the contract: dead-lettered, answered
    envelopes = [decision_envelope("091", grant(r)) for r in refs[:20]] + [
        decision_envelope("091", bad_validity), decision_envelope("091", broken)] + [
        decision_envelope("091", grant(r)) for r in refs[20:]]
    async with CaseSystem(bus.url_of("091"), namespace=bus.ns) as cs:
        with pytest.raises(ValueError):
            await cs.decide_many([envelopes[0], envelopes[0]])  # a reply could not tell them apart
        replies = await cs.decide_many(envelopes, in_flight=8, timeout=60)
        assert len(replies) == len(envelopes)
        assert all(r.envelope["causationid"] == e["id"] for e, r in zip(envelopes, replies)), "each its own"
        outcomes = [r.data.get("outcome") or r.data.get("reason") for r in replies]
        assert outcomes == ["issued"] * 20 + ["invalid_validity", "contract_violation"] + ["issued"] * 20
        assert [r.data["decision_ref"] for r in replies] == [e["data"]["decision_ref"] for e in envelopes]
        assert all(r.data["client_login_code"] for r in replies if r.accepted)
        first = {r.data["decision_ref"]: r.data["voucher_id"] for r in replies if r.accepted}

        again = [decision_envelope("091", grant(r)) for r in refs]  # the same decisions as new messages
        repeated = await cs.decide_many(again, in_flight=16, timeout=60)
        assert [(r.data["outcome"], r.data["client_login_code"]) for r in repeated] == [("repeated", None)] * 40
        assert {r.data["decision_ref"]: r.data["voucher_id"] for r in repeated} == first
        assert cs.unclaimed == [], "no reply left over, none twice"

        cs.funder_id = "092"  # another funder's routing key: the broker refuses the publish
        refused = await cs.decide_many([decision_envelope("092", grant(f"MANY-{message_id()[:8]}-R{i}"))
                                        for i in range(3)], in_flight=3, timeout=10)
        assert all(isinstance(r, NotPublished) for r in refused), refused
        cs.funder_id = "091"  # and the case system goes on (a refused publish closed its channel)
        [late] = await cs.decide_many([decision_envelope("091", grant(f"MANY-{message_id()[:8]}-L"))], timeout=60)
        assert late.accepted and late.data["outcome"] == "issued"
    async with CaseSystem(bus.url_of("091"), namespace=bus.ns) as after:  # every reply was acknowledged:
        await asyncio.sleep(1.0)                                          # none is delivered again
        assert after.unclaimed == []
    assert len(await bus.vouchers("091")) == 41 and len(await bus.issued()) == 41


# ------------------------------------------------------------------ batched replies (replymode: batched, contract 1.8.0)
REPLIES_TYPE = "fi.seteli.decision.replies.v1"


async def _all_replies(bus, funder: str = "091", quiet: float = 1.5) -> list[dict]:  # noqa: ANN001
    """Every reply message on the funder's queue until none has come for ``quiet`` seconds."""
    out = [await bus.reply(funder)]
    while True:
        try:
            out.append(await bus.reply(funder, timeout=quiet))
        except AssertionError:
            return out


def _listed(messages: list[dict]) -> list[dict]:
    """The single replies and each reply a ``decision.replies.v1`` lists, in the order received."""
    out = []
    for m in messages:
        out += m["data"]["replies"] if m["type"] == REPLIES_TYPE else [m]
    return out


async def test_a_case_system_that_asks_gets_a_runs_replies_in_one_message_each_once(bus):  # noqa: ANN001
    """Decisions with ``replymode: batched`` are answered in one ``decision.replies.v1`` for the run, each listed reply
    the one the decision would have had alone (accepted with its voucher and login code, refused with its reason,
    ``causationid`` the decision's id), in the run's order, each once; in the same run the decisions that did not ask
    get their own replies, and so do the messages refused before the run (a personal identity code, a bad
    ``replymode``); the vouchers are announced before the replies."""
    from seteli_shared.decisions import DecisionReplies

    consumer = bus.app.state.runtime.extra_consumers[0]
    consumer.batch_wait = 3.0  # the messages join one run
    try:
        refs = {k: f"BAT-{k}-{uuid.uuid4().hex[:8]}" for k in "ABCDEF"}
        asked = [m | {"replymode": "batched"} for m in _mixed(refs)]
        plain = [decision(), decision(valid_from=(date.today() - timedelta(days=800)).isoformat()),
                 decision() | {"replymode": "single"}]
        bad_mode = decision() | {"replymode": "all-at-once"}
        msgs = asked[:4] + [plain[0]] + asked[4:8] + [plain[1], bad_mode] + asked[8:] + [plain[2]]
        for m in msgs:
            await bus.publish(m)
        messages = await _all_replies(bus)
    finally:
        consumer.batch_wait = 0.0
    many = [m for m in messages if m["type"] == REPLIES_TYPE]
    assert len(many) == 1, [m["type"] for m in messages]
    [batch] = many
    DecisionReplies.model_validate(batch["data"])
    assert (batch["data"]["funder_id"], batch["source"]) == ("091", "/seteli/vouchers")
    listed = batch["data"]["replies"]
    position = {m["id"]: i for i, m in reversed(list(enumerate(msgs)))}
    assert [position[r["causationid"]] for r in listed] == sorted(position[r["causationid"]] for r in listed)
    outcomes = [r["data"].get("outcome") or r["data"].get("reason") for r in listed]
    assert outcomes == ["issued", "repeated", "amended", "stale_version", "issued", "revoked", "funder_mismatch",
                        "invalid_validity", "issued"]
    assert [r["data"]["decision_ref"] for r in listed] == [refs[k] for k in "AAAABBCDE"]
    vouchers = {v.decision_ref: v for v in await bus.vouchers()}
    for r in listed:
        assert r["type"] in ("fi.seteli.decision.accepted.v1", "fi.seteli.decision.rejected.v1")
        assert r["source"] == "/seteli/vouchers" and r["id"] and r["time"]
        if r["data"].get("outcome") == "issued":
            v = vouchers[r["data"]["decision_ref"]]
            assert (r["data"]["voucher_id"], r["data"]["voucher_code"]) == (v.id, grouped(v.voucher_code))
            assert r["data"]["client_login_code"] and r["subject"] == r["data"]["decision_ref"]
        elif r["type"].endswith("rejected.v1"):
            assert r["data"]["message"]
    singles = [m for m in messages if m["type"] != REPLIES_TYPE]
    by_cause = {m["causationid"]: m["data"] for m in singles}
    assert len(singles) == len(by_cause) == 5, "each of the others its own reply, once"
    assert by_cause[plain[0]["id"]]["outcome"] == "issued" and by_cause[plain[0]["id"]]["client_login_code"]
    assert by_cause[plain[1]["id"]]["reason"] == "invalid_validity"
    assert by_cause[plain[2]["id"]]["outcome"] == "issued", "replymode single: as before"
    assert (by_cause[bad_mode["id"]]["reason"], by_cause[bad_mode["id"]]["fields"]) == (
        "contract_violation", ["replymode"])
    assert by_cause[asked[9]["id"]]["reason"] == "personal_identity_code", "refused before the run: a reply of its own"
    every = [r["causationid"] for r in _listed(messages)]
    assert len(every) == len(set(every)) == len(msgs) - 1, "every decision answered once (the repeated message not)"
    # the vouchers the replies name are announced first, and nothing else is in the outbox for the run
    rows = await bus.outbox_in_order()
    batch_at = [i for i, (key, body) in enumerate(rows) if body["type"] == REPLIES_TYPE]
    issued_at = [i for i, (key, body) in enumerate(rows) if key.startswith("voucher.issued")
                 and any(v["decision_ref"] in refs.values() for v in body["data"].get("vouchers", [body["data"]]))]
    assert batch_at and issued_at and max(issued_at) < min(batch_at)
    assert [key for key, body in rows if body["type"] == REPLIES_TYPE] == ["decision-replies/reply.091"]


async def test_a_redelivered_run_does_not_answer_twice_and_replies_are_split_at_the_setting(bus):  # noqa: ANN001
    """The run's acknowledgement lost (its messages delivered again): the inbox drops them, no second
    ``decision.replies.v1``; ``DECISION_REPLIES_PER_MESSAGE`` replies at most in one message."""
    consumer = bus.app.state.runtime.extra_consumers[0]
    settings = consumer.bus.settings
    assert settings.decision_replies_per_message == 1000, "the default"
    ack, lost = consumer._ack, []

    async def lose_once(items):  # noqa: ANN001, ANN202  (as if the ack never reached the broker)
        if not lost:
            lost.append(len(items))
            for p in items:
                await p.message.nack(requeue=True)
            return
        await ack(items)

    consumer._ack = lose_once
    consumer.batch_wait = 3.0
    settings.decision_replies_per_message = 4
    try:
        msgs = [decision(client_ref=f"asiakas-r{i}") | {"replymode": "batched"} for i in range(10)]
        for m in msgs:
            await bus.publish(m)
        messages = await _all_replies(bus, quiet=3.0)
    finally:
        consumer._ack, consumer.batch_wait = ack, 0.0
        settings.decision_replies_per_message = 1000
    assert lost == [10], "the run was delivered again"
    assert [len(m["data"]["replies"]) for m in messages] == [4, 4, 2]
    assert [r["causationid"] for r in _listed(messages)] == [m["id"] for m in msgs], "each once, in order"
    assert {r["data"]["outcome"] for r in _listed(messages)} == {"issued"}
    assert len(await bus.vouchers()) == 10
    assert await bus.no_more_replies(wait=0.5)


async def test_the_sample_client_asks_for_batched_replies_and_unpacks_them(bus):  # noqa: ANN001
    """``CaseSystem`` asks for batched replies by default: ``decide_many`` and ``decide`` get each decision's own reply
    out of the ``decision.replies.v1`` messages; a listed reply nobody waits for goes to ``unclaimed``; with
    ``batched_replies=False`` the replies come one a message, as before."""
    from seteli_client import CaseSystem, decision_envelope, message_id

    today = date.today()

    def grant(ref: str) -> dict:
        return {"decision_ref": ref, "decision_version": 1, "action": "grant", "client_ref": "asiakas-b1",
                "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
                "valid_from": today.isoformat(), "valid_until": (today + timedelta(days=300)).isoformat()}

    consumer = bus.app.state.runtime.extra_consumers[0]
    consumer.batch_wait = 1.0
    try:
        async with CaseSystem(bus.url_of("091"), namespace=bus.ns) as cs:
            assert cs.batched_replies
            envelopes = [decision_envelope("091", grant(f"CLI-{message_id()[:8]}-{i}")) for i in range(12)]
            replies = await cs.decide_many(envelopes, in_flight=12, timeout=60)
            assert [r.envelope["causationid"] for r in replies] == [e["id"] for e in envelopes]
            assert all(r.accepted and r.data["outcome"] == "issued" and r.data["client_login_code"] for r in replies)
            one = await cs.decide(decision_envelope("091", grant(f"CLI-{message_id()[:8]}-one")), timeout=60)
            assert one.accepted and one.data["outcome"] == "issued"
            stray = decision_envelope("091", grant(f"CLI-{message_id()[:8]}-stray"))
            await cs.publish(stray)  # published, its reply awaited by nobody
            for _ in range(100):
                if cs.unclaimed:
                    break
                await asyncio.sleep(0.1)
            assert [r.envelope["causationid"] for r in cs.unclaimed] == [stray["id"]]
        async with CaseSystem(bus.url_of("091"), namespace=bus.ns, batched_replies=False) as single:
            plain = [decision_envelope("091", grant(f"CLI-{message_id()[:8]}-p{i}")) for i in range(3)]
            answered = await single.decide_many(plain, in_flight=3, timeout=60)
            assert [r.envelope["type"] for r in answered] == ["fi.seteli.decision.accepted.v1"] * 3
    finally:
        consumer.batch_wait = 0.0
    rows = [body for key, body in await bus.outbox_in_order() if key == "decision-replies/reply.091"]
    batched = [r for body in rows if body["type"] == REPLIES_TYPE for r in body["data"]["replies"]]
    assert {r["causationid"] for r in batched} == {e["id"] for e in envelopes} | {stray["id"]} | {
        one.envelope["causationid"]}, "the client asked: its replies went batched"
    assert {body["causationid"] for body in rows if body["type"] != REPLIES_TYPE} == {e["id"] for e in plain}
