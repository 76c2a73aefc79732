"""The operator's dead-letter tool (``deadletters``, ``ops_api``) on the real RabbitMQ and PostgreSQL: a message
whose consumer lacks a prerequisite is dead-lettered, listed, shown, its prerequisite created, replayed and takes
effect once; replaying it again (or a copy of it left in the dead-letter queue) changes nothing; discarding one
removes it; each action is in the audit trail."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import aio_pika
import httpx
import pytest
from sqlalchemy import text

from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.events import Envelope, FunderRegistered
from seteli_shared.service import ServiceSpec, create_service_app
from seteli_shared.settings import ServiceSettings
from seteli_shared.testing import eventually, make_settings

OP = {"Authorization": f"Bearer {mint('ops-test', ['operator'])}"}


async def needs_prerequisite(session, envelope, event) -> None:  # noqa: ANN001
    """The consumer's effect: one row per funder registered, only once the funder's prerequisite row exists
    (until then it fails, is retried and dead-lettered, as a handler does whose projection lags)."""
    found = (await session.execute(text("SELECT 1 FROM ops_prereq WHERE funder_id = :f"),
                                   {"f": event.funder_id})).first()
    if found is None:
        raise RuntimeError("prerequisite missing")
    await session.execute(text("INSERT INTO ops_effect (message_id, funder_id) VALUES (:m, :f)"),
                          {"m": envelope.id, "f": event.funder_id})


def _migrations():  # noqa: ANN202
    import registry.app  # any service's schema: the outbox, inbox and audit tables

    return registry.app.SPEC.migrations_dir


@pytest.fixture
async def ops(pg, namespace, amqp_url):  # noqa: ANN001
    spec = ServiceSpec(name="test", migrations_dir=_migrations(), routers=[],
                       handlers={FunderRegistered.event_type(): needs_prerequisite})
    settings = ServiceSettings(service_name="test", environment="test", bus_namespace=namespace, amqp_url=amqp_url,
                               database_url=await pg.create("ops"), delivery_limit=3, relay_idle_seconds=0.05)
    app = create_service_app(spec, settings)
    async with app.router.lifespan_context(app):
        async with app.state.runtime.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE ops_prereq (funder_id text PRIMARY KEY)"))
            await conn.execute(text("CREATE TABLE ops_effect (message_id text, funder_id text)"))
        bus = Bus(make_settings(service_name="registry", bus_namespace=namespace, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops",
                                         headers=OP) as client:
                yield app, client, bus
        finally:
            await bus.close()


def _registered(funder_id: str) -> Envelope:
    return Envelope.wrap(FunderRegistered(funder_id=funder_id, name="Testikunta", kind="municipality",
                                          operator_fee_rate=Decimal("0.02"),
                                          registered_at=datetime(2026, 1, 1, tzinfo=timezone.utc)), "registry")


async def _publish(bus: Bus, env: Envelope) -> None:
    await bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type,
                      headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})


async def _effects(app) -> list[tuple]:  # noqa: ANN001
    async with app.state.runtime.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text("SELECT message_id, funder_id FROM ops_effect"))).all()]


async def _dead(client: httpx.AsyncClient, n: int) -> dict:
    async def listed():  # noqa: ANN202
        body = (await client.get("/ops/dead-letters")).json()
        return body if len(body["items"]) == n else None

    return await eventually(listed, timeout=20)


async def test_a_dead_letter_is_listed_fixed_replayed_once_and_a_second_replay_changes_nothing(ops):  # noqa: ANN001
    app, client, bus = ops
    env = _registered("091")
    await _publish(bus, env)

    listed = await _dead(client, 1)
    assert listed["queues"] == [{"queue": app.state.settings.queue_name,
                                 "dead_letter_queue": f"{app.state.settings.queue_name}.dlq", "messages": 1}]
    letter = listed["items"][0]
    assert letter["id"] == env.id and letter["type"] == env.type
    assert letter["queue"] == app.state.settings.queue_name
    assert letter["reason"].startswith("failed 3 times: RuntimeError('prerequisite missing')"), letter
    assert letter["attempts"] == 3 and letter["replays"] == 0 and letter["dead_lettered_at"] is not None
    assert letter["headers"]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert "body" not in letter and "Testikunta" not in json.dumps(letter)  # never the body
    shown = (await client.get(f"/ops/dead-letters/{env.id}")).json()
    assert shown == letter  # reading took nothing away
    assert (await client.get("/ops/dead-letters")).json()["queues"][0]["messages"] == 1
    assert await _effects(app) == []

    # the fix: the consumer's prerequisite exists now; the replay takes effect once
    async with app.state.runtime.engine.begin() as conn:
        await conn.execute(text("INSERT INTO ops_prereq VALUES ('091')"))
    r = await client.post(f"/ops/dead-letters/{env.id}/replay")
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1 and r.json()["items"][0]["id"] == env.id
    await eventually(lambda: _effects(app), timeout=10)
    assert await _effects(app) == [(env.id, "091")]
    assert (await client.get("/ops/dead-letters")).json()["queues"][0]["messages"] == 0

    # replaying it again: it is no longer a dead letter
    r = await client.post(f"/ops/dead-letters/{env.id}/replay")
    assert r.status_code == 404 and r.json()["error"]["reason"] == "dead_letter_not_found"
    # a copy of it still in the dead-letter queue (a twin dead-lettered earlier): replayed, the inbox drops it
    connection = await aio_pika.connect(app.state.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(
            env.model_dump_json().encode(), message_id=env.id, type=env.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"x-seteli-reason": "failed 3 times: RuntimeError('prerequisite missing')",
                     "x-seteli-consumer": app.state.settings.queue_name, "x-seteli-deliveries": 3}),
            routing_key=f"{app.state.settings.queue_name}.dlq")
    await _dead(client, 1)
    r = await client.post("/ops/dead-letters/replay", json={"all": True})
    assert r.status_code == 200 and r.json()["count"] == 1, r.text
    await _dead(client, 0)

    async def inbox_saw_it_twice() -> bool:
        # the consumer took the copy (acknowledged it) without a second effect
        queue = app.state.runtime.consumer.queue
        declared = await queue.channel.declare_queue(queue.name, passive=True)
        return declared.declaration_result.message_count == 0 and not app.state.runtime.consumer._buffer.qsize()

    await eventually(inbox_saw_it_twice, timeout=10)
    await _settle()
    assert await _effects(app) == [(env.id, "091")]

    audit = (await client.get("/audit")).json()["items"]
    replays = [(a["action"], a["resource_id"], a["actor"]) for a in audit if a["action"].startswith("dead_letter")]
    assert replays == [("dead_letter.replay", env.id, "ops-test")] * 2


async def _settle() -> None:
    import asyncio

    await asyncio.sleep(0.5)  # a consumer's batch in flight commits within this


async def test_discard_and_the_refusals(ops):  # noqa: ANN001
    app, client, bus = ops
    first, second = _registered("091"), _registered("092")
    await _publish(bus, first)
    await _publish(bus, second)
    await _dead(client, 2)
    only = (await client.get("/ops/dead-letters", params={"reason": "prerequisite", "limit": 1})).json()
    assert len(only["items"]) == 1 and only["queues"][0]["messages"] == 2

    assert (await client.post("/ops/dead-letters/replay", json={})).status_code == 422  # no filter, no all
    r = await client.get("/ops/dead-letters", params={"queue": "somebody-else"})
    assert r.status_code == 404 and r.json()["error"]["reason"] == "unknown_queue"
    assert (await client.get("/ops/dead-letters", headers={
        "Authorization": f"Bearer {mint('t', ['funder_finance'], funder_id='091')}"})).status_code == 403

    r = await client.post(f"/ops/dead-letters/{first.id}/discard")
    assert r.status_code == 200 and r.json()["count"] == 1
    assert [x["id"] for x in (await _dead(client, 1))["items"]] == [second.id]
    r = await client.post("/ops/dead-letters/discard", json={"type": second.type})
    assert r.json()["count"] == 1
    await _dead(client, 0)
    assert (await client.get(f"/ops/dead-letters/{first.id}")).status_code == 404
    await _settle()
    assert await _effects(app) == []  # discarded: never processed
    audit = (await client.get("/audit")).json()["items"]
    assert sorted(a["resource_id"] for a in audit if a["action"] == "dead_letter.discard") == sorted(
        [first.id, second.id])
