"""A consumer's batch is bounded by bytes as well as by messages (on the real RabbitMQ and PostgreSQL): a
message that lists thousands of facts (a ``charge.settled.v2``) is a batch's worth of work by itself, so a
backlog of them must not become one transaction of millions of facts."""
from __future__ import annotations

import asyncio

import sqlalchemy as sa

from seteli_shared.bus import Bus, Outgoing
from seteli_shared.consumer import Consumer
from seteli_shared.db import make_engine, session_factory
from seteli_shared.events import Envelope, Event
from seteli_shared.messaging import InboxMessage
from seteli_shared.testing import delete_namespace, eventually, make_settings


class BigTick(Event):
    __test__ = False
    event_name = "test.big_tick"
    n: int
    pad: str


async def test_a_batch_stops_at_its_bytes_and_every_message_is_applied_once(pg, namespace, amqp_url):  # noqa: ANN001
    url = await pg.create("batches")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: InboxMessage.__table__.create(c))
    bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url, database_url=url))
    await bus.connect()
    runs: list[list[int]] = []

    async def ticks(_session, batch) -> None:  # noqa: ANN001
        runs.append([e.n for _, e in batch])

    consumer = Consumer(bus, session_factory(engine), f"{namespace}.test", {},
                        batch_handlers={BigTick.event_type(): ticks}, batch_size=100, batch_bytes=150_000)
    try:
        await consumer.declare()
        envelopes = [Envelope.wrap(BigTick(n=n, pad="x" * 60_000), "test") for n in range(12)]
        results = await bus.publish_many([Outgoing(env.model_dump_json().encode(), env.routing_key, env.id, env.type)
                                          for env in envelopes])
        assert results == [None] * 12
        await consumer.start()  # the twelve are waiting: they arrive together
        await eventually(lambda: sorted(n for run in runs for n in run) == list(range(12)), timeout=30)
        assert max(len(run) for run in runs) <= 3, runs  # 60 kB each: the third passes 150 kB and ends the batch
        assert any(len(run) > 1 for run in runs), runs
        await asyncio.sleep(0.5)
        assert sorted(n for run in runs for n in run) == list(range(12))  # each once
    finally:
        await consumer.stop()
        await bus.close()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM inbox"))).scalar_one() == 12
        await engine.dispose()


class Tick(Event):
    __test__ = False
    event_name = "test.tick"
    n: int


async def _trickle(pg, namespace: str, amqp_url: str, name: str, batch_wait: float) -> list[list[int]]:  # noqa: ANN001
    """30 events published one at a time, 10 ms apart, to a consumer with ``batch_wait``: the batches it folded."""
    url = await pg.create(f"trickle{name}")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: InboxMessage.__table__.create(c))
    bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url, database_url=url))
    await bus.connect()
    runs: list[list[int]] = []

    async def ticks(_session, batch) -> None:  # noqa: ANN001
        runs.append([e.n for _, e in batch])

    consumer = Consumer(bus, session_factory(engine), f"{namespace}.{name}", {},
                        batch_handlers={Tick.event_type(): ticks}, batch_size=100, batch_wait=batch_wait)
    try:
        await consumer.declare()
        await consumer.start()
        for n in range(30):
            env = Envelope.wrap(Tick(n=n), "test")
            assert await bus.publish_many([Outgoing(env.model_dump_json().encode(), env.routing_key, env.id,
                                                    env.type)]) == [None]
            await asyncio.sleep(0.01)
        await eventually(lambda: sorted(n for run in runs for n in run) == list(range(30)), timeout=30)
        await asyncio.sleep(0.3)
        assert sorted(n for run in runs for n in run) == list(range(30))  # each once, in the inbox once
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM inbox"))).scalar_one() == 30
        return runs
    finally:
        await consumer.stop()
        await bus.close()
        await engine.dispose()
        await delete_namespace(amqp_url, namespace, [f"{namespace}.{name}"], listing=False)


async def test_a_trickle_of_events_is_folded_in_few_batches_when_the_batch_waits(pg, namespace, amqp_url):  # noqa: ANN001
    """``CONSUMER_BATCH_WAIT_SECONDS``: after a batch's first message the consumer waits for more (single charges
    arrive a few milliseconds apart); without the wait nearly every event is a batch (a transaction) of its own."""
    waited = await _trickle(pg, namespace, amqp_url, "waits", batch_wait=0.25)
    at_once = await _trickle(pg, namespace, amqp_url, "atonce", batch_wait=0.0)
    assert len(waited) <= 10, waited  # 30 events over ~0.4 s, a batch at most every 0.25 s (a busy machine: slack)
    assert len(at_once) > 2 * len(waited), (at_once, waited)


async def test_a_backlog_of_large_messages_is_held_within_the_byte_budget_and_each_applied_once(
        pg, namespace, amqp_url):  # noqa: ANN001
    """The broker's prefetch counts messages; a backlog of big ones (a ``charge.accepted.v2`` is ~420 kB) must not
    all land in the process at once: the prefetch starts small and follows ``held_bytes`` over the largest recent
    body, so what the process holds stays near the budget; each message applied once, none lost. Small messages
    afterwards let the prefetch grow back to the configured one."""
    url = await pg.create("heldbytes")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: InboxMessage.__table__.create(c))
    bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url, database_url=url))
    await bus.connect()
    runs: list[list[int]] = []
    most_held = 0

    async def ticks(_session, batch) -> None:  # noqa: ANN001
        nonlocal most_held
        most_held = max(most_held, consumer._held)  # noqa: SLF001
        runs.append([e.n for _, e in batch])
        await asyncio.sleep(0.02)  # a consumer slower than the broker, as after an outage

    consumer = Consumer(bus, session_factory(engine), f"{namespace}.held", {},
                        batch_handlers={BigTick.event_type(): ticks}, prefetch=1000, batch_size=100,
                        batch_bytes=250_000, held_bytes=1_000_000)

    def publish(first: int, count: int, pad: int):  # noqa: ANN202
        envelopes = [Envelope.wrap(BigTick(n=n, pad="x" * pad), "test") for n in range(first, first + count)]
        return bus.publish_many([Outgoing(env.model_dump_json().encode(), env.routing_key, env.id, env.type)
                                 for env in envelopes])

    try:
        await consumer.declare()
        assert await publish(0, 100, 100_000) == [None] * 100  # 10 MB waiting
        await consumer.start()
        await eventually(lambda: sorted(n for run in runs for n in run) == list(range(100)), timeout=60)
        # the first 16, then ten at a time (while the first ones still settle): never the 10 MB
        assert most_held < 3_000_000, most_held
        assert 5 <= consumer._qos <= 10, consumer._qos  # noqa: SLF001  (1 MB over a body of 100 kB and its envelope)
        assert await publish(100, 1000, 10) == [None] * 1000  # small ones: the prefetch grows back
        await eventually(lambda: len([n for run in runs for n in run]) == 1100, timeout=60)
        assert consumer._qos >= 500, consumer._qos  # noqa: SLF001
        await asyncio.sleep(0.5)
        assert sorted(n for run in runs for n in run) == list(range(1100)), "each once"
        assert consumer._held == 0  # noqa: SLF001
    finally:
        await consumer.stop()
        await bus.close()
        async with engine.connect() as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM inbox"))).scalar_one()
        await engine.dispose()
    assert count == 1100
