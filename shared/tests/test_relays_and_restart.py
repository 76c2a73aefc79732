"""PostgreSQL-specific guarantees of the relay, and recovery from a broker restart."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from seteli_shared.outbox import OutboxRelay

from .test_outbox_inbox import World, count_messages, spy_queue, world  # noqa: F401  (fixture)
from seteli_shared.testing import eventually


@pytest.mark.parametrize("world", ["postgresql"], indirect=True)
async def test_several_relays_never_publish_a_row_twice(world: World):
    spy = await spy_queue(world)
    for start in range(0, 1500, 300):
        await world.emit(*range(start, start + 300))
    relays = [OutboxRelay(world.engine, world.bus, batch_size=100) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.relay_once():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    assert await world.unsent() == 0
    got: list = []

    async def all_arrived():  # noqa: ANN202
        got.extend(await count_messages(spy))
        return len(got) >= 1500

    await eventually(all_arrived)
    await asyncio.sleep(0.3)
    got.extend(await count_messages(spy))
    ns = [json.loads(m.body)["data"]["n"] for m in got]
    assert sorted(ns) == list(range(1500)), "each row published exactly once"


@pytest.fixture
async def world_on_own_broker(pg, own_broker):  # noqa: ANN001
    """A ``World`` whose bus is a RabbitMQ node of this test run's own (``own_broker``), which it may stop."""
    from seteli_shared.bus import Bus
    from seteli_shared.db import make_engine
    from seteli_shared.messaging import InboxMessage, OutboxMessage
    from seteli_shared.testing import make_settings

    from .test_outbox_inbox import metadata

    url = await pg.create("msg")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: OutboxMessage.__table__.create(c))
        await conn.run_sync(lambda c: InboxMessage.__table__.create(c))
        await conn.run_sync(metadata.create_all)
    bus = Bus(make_settings(service_name="test", bus_namespace="restart", amqp_url=own_broker.nodes[0].url,
                            database_url=url))
    await bus.connect()
    yield World(engine, bus, "restart")
    await bus.close()
    await engine.dispose()


async def test_restarting_the_broker_loses_no_event_and_consumer_and_relay_come_back(
        world_on_own_broker: World, own_broker):  # noqa: ANN001
    """Stops and starts a broker node of this run's own (``rabbitnodes``; never the machine's shared
    ``rabbit@localhost``): an event committed while it is down is published when it is back, and the
    consumer and the relay reconnect by themselves. The node is always started again."""
    world, node = world_on_own_broker, own_broker.nodes[0]
    consumer = world.consumer()
    await consumer.start()
    relay = OutboxRelay(world.engine, world.bus, idle_seconds=0.1)
    relay_task = asyncio.create_task(relay.run())
    try:
        await world.emit(1)
        await eventually(lambda: _has(world, {1}))

        try:
            await asyncio.to_thread(node.stop_app)
            await world.emit(2)  # committed while the broker is down: must not be lost
            await asyncio.sleep(1.0)
        finally:
            await asyncio.to_thread(node.start_app)
        await world.emit(3)
        await eventually(lambda: _has(world, {1, 2, 3}), timeout=60)
        assert await world.unsent() == 0
    finally:
        relay.stop()
        await relay_task
        await consumer.stop()


async def _has(world: World, ns: set[int]) -> bool:
    return set(await world.effects()) == ns


CHILD = """
import asyncio, os, sys
from seteli_shared.bus import Bus
from seteli_shared.db import make_engine
from seteli_shared.outbox import OutboxRelay
from seteli_shared.settings import ServiceSettings

async def main():
    s = ServiceSettings(service_name="test", bus_namespace=sys.argv[1], amqp_url=sys.argv[2],
                        database_url=sys.argv[3], environment="test")
    bus = Bus(s)
    await bus.connect()

    class KilledAfterPublishing(OutboxRelay):
        async def _publish(self, rows):
            await super()._publish(rows)
            os._exit(9)  # killed: published and confirmed, never marked sent

    await KilledAfterPublishing(make_engine(s.database_url), bus).relay_once()

asyncio.run(main())
"""


@pytest.mark.parametrize("world", ["postgresql"], indirect=True)
async def test_relay_process_killed_after_publishing_changes_nothing(world: World):
    import sys

    consumer = world.consumer()
    await consumer.start()
    await world.emit(41, 42, 43)
    url = world.engine.url.render_as_string(hide_password=False)
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, world.namespace,
                                                 world.bus.settings.amqp_url, url)
    assert await child.wait() == 9
    assert await world.unsent() == 3, "the killed relay's transaction never committed"
    await eventually(lambda: _has(world, {41, 42, 43}))
    await world.drain(OutboxRelay(world.engine, world.bus))  # the next relay publishes them again
    assert await world.unsent() == 0
    await asyncio.sleep(0.8)
    assert await world.effects() == {41: 1, 42: 1, 43: 1}, "the redelivery changed nothing"
    await consumer.stop()
