"""Throughput of the bus: raw aio-pika against the project's whole outbox -> relay -> RabbitMQ ->
consumer -> inbox path, both against the real local RabbitMQ and PostgreSQL, in one run.

Runs, in this order:

1. raw aio-pika: one publisher with publisher confirms sending persistent messages to a durable
   quorum queue, about ``--window`` in flight, and concurrently a consumer with manual acks and
   prefetch 256 on the same queue; timed from the first publish to the last ack;
2. the pipeline: a producer commits outbox rows with ``add_event`` (``--producer-batch`` events per
   transaction) in a fresh PostgreSQL database while the project's ``OutboxRelay`` and
   ``Consumer`` run; the handler upserts one effect row per event; timed from the first outbox
   commit until the effect table holds N rows, then checked for exactly N rows, each applied once;
3. raw aio-pika again; the mean of the two raw runs is the baseline.

It prints the figures as plain lines and a final JSON line. Everything it creates (queues,
exchanges, the database) is unique to the run and removed at the end.

    .venv/bin/python bench/bus_pipeline.py [--messages 20000] [--relay-batch 500] [--consumer-batch 128]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import warnings
from urllib.parse import urlparse, urlunparse

import aio_pika
import asyncpg
import sqlalchemy as sa
from aio_pika import DeliveryMode, Message
from sqlalchemy.dialects.postgresql import insert as pg_insert

from seteli_shared.bus import Bus
from seteli_shared.consumer import Consumer
from seteli_shared.db import make_engine, session_factory
from seteli_shared.events import Envelope, Event
from seteli_shared.logging import configure_logging
from seteli_shared.messaging import InboxMessage, OutboxMessage
from seteli_shared.outbox import OutboxRelay, add_event, add_events
from seteli_shared.settings import ServiceSettings

# sqlmodel's AsyncSession warns on every execute(); the project's own code calls execute() too
warnings.filterwarnings("ignore", message=r"\s*\S* You probably want to use `session.exec\(\)`", category=DeprecationWarning)

TARGET_PERCENT = 70.0
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: server URL (no database); the benchmark creates and drops its own database there
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class BenchTick(Event):
    event_name = "bench.tick"
    n: int


bench_metadata = sa.MetaData()
EFFECT = sa.Table(
    "bench_effect",
    bench_metadata,
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("applied", sa.Integer, nullable=False),
)


def sample_body(n: int) -> bytes:
    """A body of the same shape and size as the pipeline's messages (a CloudEvents envelope)."""
    return Envelope.wrap(BenchTick(n=n), "bench").model_dump_json().encode()


# ------------------------------------------------------------------ 1. raw aio-pika
async def run_raw(n: int, window: int, prefetch: int) -> float:
    """Messages per second from the first publish to the last ack."""
    queue_name = f"bench-raw-{secrets.token_hex(6)}"
    pub_conn = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "bench-raw-pub"})
    con_conn = await aio_pika.connect(AMQP_URL, client_properties={"connection_name": "bench-raw-con"})
    try:
        pub_channel = await pub_conn.channel(publisher_confirms=True)
        await pub_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        con_channel = await con_conn.channel()
        await con_channel.set_qos(prefetch_count=prefetch)
        queue = await con_channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})

        bodies = [sample_body(i) for i in range(n)]
        acked = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal acked
            await message.ack()
            acked += 1
            if acked >= n:
                done.set()

        consumer_tag = await queue.consume(on_message)
        exchange = pub_channel.default_exchange

        start = time.perf_counter()
        for lo in range(0, n, window):
            await asyncio.gather(*(
                exchange.publish(
                    Message(body, delivery_mode=DeliveryMode.PERSISTENT, message_id=str(lo + i)),
                    queue_name, timeout=30,
                )
                for i, body in enumerate(bodies[lo:lo + window])
            ))
        await asyncio.wait_for(done.wait(), timeout=max(120.0, n / 50))
        elapsed = time.perf_counter() - start
        await queue.cancel(consumer_tag)
        if acked != n:
            raise RuntimeError(f"raw: {acked} acks for {n} messages")
        return n / elapsed
    finally:
        try:
            ch = await pub_conn.channel()
            await ch.queue_delete(queue_name, if_unused=False, if_empty=False)
        finally:
            await con_conn.close()
            await pub_conn.close()


# ------------------------------------------------------------------ 2. the pipeline
def _with_database(url: str, database: str, driver: str | None = None) -> str:
    parts = urlparse(url)
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return urlunparse(parts._replace(scheme=scheme, path=f"/{database}"))


async def _create_schema(engine) -> None:  # noqa: ANN001
    """The outbox and inbox as in every service (including the outbox's partial index) plus the effect table."""
    indexes = list(OutboxMessage.__table__.indexes)

    def create(sync_conn) -> None:  # noqa: ANN001
        OutboxMessage.metadata.create_all(sync_conn, tables=[OutboxMessage.__table__, InboxMessage.__table__])
        if not any(ix.name == "ix_outbox_unsent" for ix in indexes):
            sync_conn.execute(sa.text("CREATE INDEX ix_outbox_unsent ON outbox (seq) WHERE sent_at IS NULL"))
        bench_metadata.create_all(sync_conn)

    async with engine.begin() as conn:
        await conn.run_sync(create)


#: one effect row per event; a second application of the same event would show as applied = 2
UPSERT_EFFECT = pg_insert(EFFECT).on_conflict_do_update(
    index_elements=[EFFECT.c.n], set_={"applied": EFFECT.c.applied + 1}
)


async def _handle_tick(session, envelope: Envelope, event: BenchTick) -> None:  # noqa: ANN001
    """The consumer's handler: one statement per event, in the batch's transaction (built once:
    building an upsert per call costs more CPU here than the round trip)."""
    await session.execute(UPSERT_EFFECT, {"n": event.n, "message_id": envelope.id, "applied": 1})


async def _handle_ticks(session, batch: list[tuple[Envelope, BenchTick]]) -> None:  # noqa: ANN001
    """The batched handler: a run of events' effects in one statement, in the batch's transaction."""
    await session.execute(UPSERT_EFFECT, [{"n": e.n, "message_id": env.id, "applied": 1} for env, e in batch])


async def _delete_bus_objects(ns: str, queue: str) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    try:
        for name in (queue, f"{queue}.dlq"):
            ch = await conn.channel()
            try:
                await ch.queue_delete(name)
            except Exception as exc:  # noqa: BLE001
                print(f"  (could not delete queue {name}: {exc!r})", file=sys.stderr)
        for name in (f"{ns}.events", f"{ns}.dlx"):
            ch = await conn.channel()
            try:
                await ch.exchange_delete(name)
            except Exception as exc:  # noqa: BLE001
                print(f"  (could not delete exchange {name}: {exc!r})", file=sys.stderr)
    finally:
        await conn.close()


async def run_pipeline(n: int, producer_batch: int, relay_batch: int, consumer_batch: int,
                       prefetch: int, batched: bool, relays: int = 1) -> dict:
    """Messages per second from the first outbox commit until the effect table holds N rows."""
    suffix = secrets.token_hex(4)
    db_name = f"seteli_bench_{suffix}"
    ns = f"bench{suffix}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    db_url = _with_database(PG_URL, db_name, "asyncpg")

    producer_settings = ServiceSettings(
        service_name="bench", bus_namespace=ns, database_url=db_url, amqp_url=AMQP_URL,
        relay_batch_size=relay_batch, consumer_batch_size=consumer_batch, consumer_prefetch=prefetch,
    )
    # the consumer is another service in production: its own connection and pool
    consumer_settings = producer_settings.model_copy(update={"service_name": "bench-consumer"})
    queue_name = f"{ns}.bench"

    engine = make_engine(db_url)
    consumer_engine = make_engine(db_url)
    probe_engine = make_engine(db_url, pool_size=1, max_overflow=0)
    producer_bus = Bus(producer_settings)
    consumer_bus = Bus(consumer_settings)
    relay = consumer = relay_task = None
    extra: list = []
    extra_tasks: list = []
    try:
        await _create_schema(engine)
        await producer_bus.connect()
        await consumer_bus.connect()
        handlers = {} if batched else {BenchTick.event_type(): _handle_tick}
        batch_handlers = {BenchTick.event_type(): _handle_ticks} if batched else {}
        consumer = Consumer(
            consumer_bus, session_factory(consumer_engine), queue_name, handlers, batch_handlers=batch_handlers,
            prefetch=prefetch, batch_size=consumer_batch, delivery_limit=producer_settings.delivery_limit,
        )
        await consumer.start()  # declares and binds the queue before anything is published
        extra = [OutboxRelay(engine, producer_bus, batch_size=relay_batch,
                             idle_seconds=producer_settings.relay_idle_seconds) for _ in range(relays - 1)]
        extra_tasks = [asyncio.create_task(r.run()) for r in extra]
        relay = OutboxRelay(engine, producer_bus, batch_size=relay_batch,
                            idle_seconds=producer_settings.relay_idle_seconds)
        relay_task = asyncio.create_task(relay.run(), name="bench-relay")

        sessions = session_factory(engine)
        events = [BenchTick(n=i) for i in range(n)]
        first_commit: list[float] = []

        async def produce() -> float:
            for lo in range(0, n, producer_batch):
                async with sessions() as session:
                    async with session.begin():
                        if batched:
                            await add_events(session, events[lo:lo + producer_batch], "bench")
                        else:
                            for ev in events[lo:lo + producer_batch]:
                                await add_event(session, ev, "bench")
                if not first_commit:
                    first_commit.append(time.perf_counter())
            return time.perf_counter()

        start_wall = time.perf_counter()
        producer_task = asyncio.create_task(produce(), name="bench-producer")
        deadline = start_wall + max(300.0, n / 20)
        count = 0
        async with probe_engine.connect() as probe:
            while True:
                count = (await probe.execute(sa.select(sa.func.count()).select_from(EFFECT))).scalar_one()
                await probe.commit()
                if count >= n:
                    end = time.perf_counter()
                    break
                if producer_task.done() and producer_task.exception():
                    raise producer_task.exception()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"pipeline: only {count} of {n} effects after {deadline - start_wall:.0f} s")
                await asyncio.sleep(0.02)
        produced_at = await producer_task
        start = first_commit[0]

        await asyncio.sleep(0.5)  # anything arriving twice would show now
        async with probe_engine.connect() as probe:
            rows, applied, max_applied = (await probe.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(EFFECT.c.applied), 0),
                          sa.func.coalesce(sa.func.max(EFFECT.c.applied), 0))
            )).one()
            distinct_n = (await probe.execute(sa.select(sa.func.count(sa.distinct(EFFECT.c.n))))).scalar_one()
            unsent = (await probe.execute(
                sa.select(sa.func.count()).select_from(OutboxMessage.__table__)
                .where(OutboxMessage.__table__.c.sent_at.is_(None))
            )).scalar_one()
            inbox_rows = (await probe.execute(
                sa.select(sa.func.count()).select_from(InboxMessage.__table__)
            )).scalar_one()
        ok = rows == n and applied == n and max_applied == 1 and distinct_n == n and unsent == 0 and inbox_rows == n
        return {
            "rate": n / (end - start),
            "seconds": end - start,
            "producer_seconds": produced_at - start,
            "effect_rows": rows,
            "effects_applied": applied,
            "max_applied_per_row": max_applied,
            "inbox_rows": inbox_rows,
            "outbox_unsent": unsent,
            "exactly_once": ok,
        }
    finally:
        if relay is not None:
            relay.stop()
            for r in extra:
                r.stop()
            await asyncio.gather(*extra_tasks, return_exceptions=True)
        if relay_task is not None:
            await asyncio.gather(relay_task, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()
        await producer_bus.close()
        await consumer_bus.close()
        await _delete_bus_objects(ns, queue_name)
        for e in (engine, consumer_engine, probe_engine):
            await e.dispose()
        admin = await asyncpg.connect(PG_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        finally:
            await admin.close()


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000, help="messages per run (default 20000)")
    p.add_argument("--relay-batch", type=int, default=ServiceSettings.model_fields["relay_batch_size"].default,
                   help="OutboxRelay batch_size (default: the services' default, %(default)s)")
    p.add_argument("--consumer-batch", type=int, default=ServiceSettings.model_fields["consumer_batch_size"].default,
                   help="Consumer batch_size (default: the services' default, %(default)s)")
    p.add_argument("--producer-batch", type=int, default=100,
                   help="events per producer transaction (default %(default)s)")
    p.add_argument("--prefetch", type=int, default=256, help="consumer prefetch, raw and pipeline (default 256)")
    p.add_argument("--relays", type=int, default=1, help="concurrent outbox relays (default %(default)s)")
    p.add_argument("--window", type=int, default=256, help="raw publisher: messages in flight (default 256)")
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("bench", level="WARNING", json=True)  # as a service would; keeps per-message debug logs off
    n = args.messages
    print(f"bus pipeline benchmark: {n} messages, RabbitMQ {urlparse(AMQP_URL).hostname}:{urlparse(AMQP_URL).port}, "
          f"PostgreSQL {urlparse(PG_URL).hostname}:{urlparse(PG_URL).port}")
    print(f"  producer: {args.producer_batch} events per outbox transaction; relay batch {args.relay_batch}; "
          f"consumer batch {args.consumer_batch}, prefetch {args.prefetch}; raw window {args.window}")

    raw1 = await run_raw(n, args.window, args.prefetch)
    print(f"raw aio-pika (1st):              {raw1:9.0f} msg/s", flush=True)
    pipes = {}
    for mode, batched in (("batched", True), ("per_event", False)):
        pipe = pipes[mode] = await run_pipeline(n, args.producer_batch, args.relay_batch, args.consumer_batch,
                                                args.prefetch, batched, args.relays)
        print(f"pipeline {mode:<9} outbox->inbox: {pipe['rate']:9.0f} msg/s  ({pipe['seconds']:.2f} s; producer "
              f"done after {pipe['producer_seconds']:.2f} s; exactly once: {'yes' if pipe['exactly_once'] else 'NO'})",
              flush=True)
    raw2 = await run_raw(n, args.window, args.prefetch)
    print(f"raw aio-pika (2nd):              {raw2:9.0f} msg/s", flush=True)
    raw = (raw1 + raw2) / 2
    print(f"raw aio-pika (mean):             {raw:9.0f} msg/s")
    ratios = {mode: 100.0 * p["rate"] / raw for mode, p in pipes.items()}
    print(f"batched pipeline / raw:          {ratios['batched']:9.1f} %   (target {TARGET_PERCENT:.0f} %: "
          f"{'met' if ratios['batched'] >= TARGET_PERCENT else 'NOT met'}; add_events per producer transaction, "
          f"one statement per consumer batch)")
    print(f"per-event pipeline / raw:        {ratios['per_event']:9.1f} %   (add_event and one handler statement "
          f"per event)")
    for mode, pipe in pipes.items():
        print(f"exactly once ({mode}): {'yes' if pipe['exactly_once'] else 'NO'} ({pipe['effect_rows']} effect rows, "
              f"{pipe['effects_applied']} applications, {pipe['inbox_rows']} inbox rows, "
              f"{pipe['outbox_unsent']} unsent outbox rows)")
    print(json.dumps({
        "messages": n, "producer_batch": args.producer_batch, "relay_batch": args.relay_batch,
        "consumer_batch": args.consumer_batch, "prefetch": args.prefetch, "raw_window": args.window,
        "raw_1_msg_per_s": round(raw1, 1), "raw_2_msg_per_s": round(raw2, 1), "raw_mean_msg_per_s": round(raw, 1),
        **{f"{mode}_msg_per_s": round(p["rate"], 1) for mode, p in pipes.items()},
        **{f"{mode}_ratio_percent": round(r, 1) for mode, r in ratios.items()},
        "target_percent": TARGET_PERCENT, "target_met": ratios["batched"] >= TARGET_PERCENT,
        "exactly_once": all(p["exactly_once"] for p in pipes.values()),
    }))
    return 0 if all(p["exactly_once"] for p in pipes.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
