"""The outbox relay draining a full outbox (the month-end case: a settlement run's rows committed at once), against
raw aio-pika publishing the same bodies with confirms, in one run (``bench/README.md``).

``--rows`` (30,000) ``ChargeSettled`` rows as payments writes them are copied into a fresh outbox; the shared
``OutboxRelay`` publishes them to the events exchange of a namespace of its own, where one quorum queue takes
everything; timed until no row is unsent, with this process's CPU per message, for several relay batch sizes and
numbers of relays at once (PostgreSQL, ``SKIP LOCKED``). Raw: the bodies published persistent with confirms, 256 in
flight, to a quorum queue, before and after. Everything it creates is removed.

    .venv/bin/python bench/relay_drain.py [--rows 30000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from datetime import datetime, timezone

import aio_pika
import asyncpg
from aio_pika import DeliveryMode, Message

from seteli_shared.bus import Bus
from seteli_shared.db import make_engine
from seteli_shared.events import ChargeSettled, Envelope
from seteli_shared.ids import new_id
from seteli_shared.logging import configure_logging
from seteli_shared.messaging import OutboxMessage
from seteli_shared.outbox import OutboxRelay
from seteli_shared.settings import ServiceSettings

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: (relay batch size, relays at once)
VARIANTS = [(500, 1), (2000, 1), (500, 2), (500, 4), (1000, 2)]


def outbox_rows(n: int) -> list[tuple]:
    now = datetime.now(timezone.utc)
    out = []
    for _ in range(n):
        env = Envelope.wrap(ChargeSettled(charge_id=new_id(), settlement_id="s", voucher_id=new_id(), funder_id="091",
                                          provider_id="p", category="home_care", gross_cents=5000, fee_cents=250,
                                          net_cents=4750, settled_at=now), "payments")
        out.append((env.id, env.routing_key, env.model_dump_json(), env.time, 0))
    return out


async def raw_publish(bodies: list[bytes], window: int = 256) -> float:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True)
        queue = f"relay-drain-raw-{secrets.token_hex(4)}"
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        start = time.perf_counter()
        for lo in range(0, len(bodies), window):
            await asyncio.gather(*(channel.default_exchange.publish(
                Message(b, delivery_mode=DeliveryMode.PERSISTENT, message_id=str(lo + i)), queue, timeout=30)
                for i, b in enumerate(bodies[lo:lo + window])))
        rate = len(bodies) / (time.perf_counter() - start)
        await channel.queue_delete(queue)
        return rate
    finally:
        await conn.close()


async def relay_drain(rows: list[tuple], batch: int, relays: int) -> tuple[float, float]:
    """(messages/s until the outbox is empty, ms of this process's CPU per message)."""
    db, ns = f"seteli_bench_drain_{secrets.token_hex(4)}", f"benchdrain{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    u = PG_URL.rsplit("/", 1)[0]
    engine = make_engine(f"{u.replace('postgresql://', 'postgresql+asyncpg://')}/{db}")
    pg = await asyncpg.connect(f"{u}/{db}")
    bus = Bus(ServiceSettings(service_name="payments", environment="test", amqp_url=AMQP_URL, bus_namespace=ns,
                              database_url=str(engine.url)))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: OutboxMessage.metadata.create_all(c, tables=[OutboxMessage.__table__]))
        await bus.connect()
        channel = await bus.connection.channel()
        exchange = await channel.declare_exchange(f"{ns}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        sink = await channel.declare_queue(f"{ns}.sink", durable=True, arguments={"x-queue-type": "quorum"})
        await sink.bind(exchange, "#")
        await pg.copy_records_to_table("outbox", records=rows, columns=[
            "message_id", "routing_key", "body", "created_at", "attempts"])
        workers = [OutboxRelay(engine, bus, batch_size=batch) for _ in range(relays)]
        start, cpu = time.perf_counter(), time.process_time()
        tasks = [asyncio.create_task(r.run()) for r in workers]
        while await pg.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
            await asyncio.sleep(0.02)
        rate, cpu_ms = len(rows) / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / len(rows)
        for r in workers:
            r.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        return rate, cpu_ms
    finally:
        await bus.close()
        await pg.close()
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30000)
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", json=True)
    rows = outbox_rows(args.rows)
    bodies = [r[2].encode() for r in rows]
    print(f"raw aio-pika publish with confirms: {await raw_publish(bodies):,.0f} msg/s", flush=True)
    for batch, relays in VARIANTS:
        rate, cpu_ms = await relay_drain(rows, batch, relays)
        print(f"relay batch {batch:>5} x {relays}: {rate:7,.0f} msg/s, CPU {cpu_ms:.3f} ms a message", flush=True)
    print(f"raw aio-pika publish with confirms: {await raw_publish(bodies):,.0f} msg/s", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
