"""Decision intake rate: service decisions per second from a funder's case system publishing them on the
bus until each is a voucher with ``VoucherIssued`` in the vouchers service's outbox, against raw aio-pika
publish+consume of the same messages on the same broker, in one run.

1. raw aio-pika: the same N decision envelopes published persistent with confirms (``--window`` in flight) to
   a durable quorum queue and consumed with manual acks (prefetch 256); first publish to last ack;
2. the service: the vouchers service runs in this process (its lifespan: migrations, consumers, relay) on a
   fresh PostgreSQL database and a bus namespace of its own; a funder-system broker user ``<ns>-funder-091``
   (``seteli_shared.broker.add_funder_system``) publishes N decisions to ``<ns>.decisions`` with routing key
   ``decision.091``, ``user_id`` set, persistent, mandatory, confirms; timed from the first publish until the
   outbox announces N vouchers (a ``voucher.issued.v1`` row each, or listed in ``voucher.issued.v2`` rows, as the
   service's ``ISSUED_EVENTS``, ``--issued-events``, says; each decision also answers on the funder's reply queue);
3. raw again; the baseline is the mean of the two raw runs.

Everything it creates (database, exchanges, queues, the broker user) is removed at the end.

    .venv/bin/python bench/decisions.py [--decisions 2000] [--window 256] [--in-flight 1000] [--issued-events v2]

With ``--in-flight N`` the funder's case system publishes through ``seteli_client.CaseSystem.decide_many`` (N
decisions published and not yet answered at a time) and the clock runs until it has read every reply.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import warnings
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlparse

# run as a script, this folder is first on sys.path, and its payments.py, reporting.py... would stand in for the
# services' packages of the same names (the namespace's clean-up imports every service's app)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import sqlalchemy as sa
from aio_pika import DeliveryMode, Message

from seteli_shared import broker
from seteli_shared.db import unit_of_work
from seteli_shared.decisions import DECISION_TYPE
from seteli_shared.events import Envelope, FunderRegistered
from seteli_shared.ids import new_id  # a uuid4 the privacy guard passes (a random one looks like a code 1 in 2,800)
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import delete_namespace

warnings.filterwarnings("ignore", category=DeprecationWarning)
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
FUNDER = "091"
SINKS = ("payments", "reporting")  # the queues VoucherIssued is routed to in the system (their names: removed at the end)


def decision_bodies(n: int) -> list[bytes]:
    today = date.today()
    out = []
    for i in range(n):
        data = {"funder_id": FUNDER, "decision_ref": f"BENCH-{i:07d}", "decision_version": 1, "action": "grant",
                "client_ref": f"asiakas-{i:07d}", "category": "home_care", "units_per_period": "20",
                "period": "month", "value_per_unit_cents": 2500, "valid_from": (today - timedelta(days=1)).isoformat(),
                "valid_until": (today + timedelta(days=300)).isoformat()}
        out.append(json.dumps({"specversion": "1.0", "id": new_id(), "source": "/funder-091/case-system",
                               "type": DECISION_TYPE, "time": datetime.now(timezone.utc).isoformat(),
                               "data": data}).encode())
    return out


async def publish_all(exchange, bodies: list[bytes], routing_key: str, window: int, **props) -> None:  # noqa: ANN001, ANN003
    for lo in range(0, len(bodies), window):
        await asyncio.gather(*(exchange.publish(
            Message(b, delivery_mode=DeliveryMode.PERSISTENT, message_id=new_id(), **props),
            routing_key, mandatory=True, timeout=30) for b in bodies[lo:lo + window]))


# ------------------------------------------------------------------ raw
async def run_raw(bodies: list[bytes], window: int) -> float:
    queue_name = f"bench-dec-raw-{secrets.token_hex(6)}"
    pub = await aio_pika.connect(AMQP_URL)
    con = await aio_pika.connect(AMQP_URL)
    try:
        pch = await pub.channel(publisher_confirms=True, on_return_raises=True)
        await pch.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        cch = await con.channel()
        await cch.set_qos(prefetch_count=256)
        queue = await cch.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        n, acked, done = len(bodies), 0, asyncio.Event()

        async def on_message(m) -> None:  # noqa: ANN001
            nonlocal acked
            json.loads(m.body)  # the consumer at least reads what it got
            await m.ack()
            acked += 1
            if acked >= n:
                done.set()

        tag = await queue.consume(on_message)
        start = time.perf_counter()
        await publish_all(pch.default_exchange, bodies, queue_name, window)
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - start
        await queue.cancel(tag)
        return n / elapsed
    finally:
        ch = await pub.channel()
        await ch.queue_delete(queue_name)
        await con.close()
        await pub.close()


# ------------------------------------------------------------------ the service
async def run_service(bodies: list[bytes], window: int, in_flight: int = 0, issued_events: str | None = None) -> dict:
    from vouchers.app import create_app
    from vouchers.handlers import on_funder_registered
    from vouchers.settings import VouchersSettings

    ns = f"bench{secrets.token_hex(5)}"
    prefix = f"{ns}-"
    db = f"seteli_bench_dec_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    u = urlparse(PG_URL)
    url = f"postgresql+asyncpg://{u.username or 'postgres'}{':' + u.password if u.password else ''}@" \
          f"{u.hostname}:{u.port or 5432}/{db}"
    settings = VouchersSettings(environment="test", database_url=url, amqp_url=AMQP_URL, bus_namespace=ns,
                                broker_user_prefix=prefix, log_level="WARNING", relay_idle_seconds=0.05,
                                **({"issued_events": issued_events} if issued_events else {}))
    app = create_app(settings)
    logging.getLogger().setLevel(logging.WARNING)
    user = None
    amqp = urlparse(AMQP_URL)
    try:
        async with app.router.lifespan_context(app):
            sessions = app.state.runtime.sessions
            event = FunderRegistered(funder_id=FUNDER, name="Kunta 091", kind="municipality",
                                     operator_fee_rate=Decimal("0.05"), registered_at=datetime.now(timezone.utc))
            async with unit_of_work(sessions) as session:
                await on_funder_registered(session, Envelope.wrap(event, "registry"), event)
            conn = await aio_pika.connect(AMQP_URL)
            ch = await conn.channel()
            await ch.declare_exchange(f"{ns}.decision-replies", aio_pika.ExchangeType.TOPIC, durable=True)
            user = await asyncio.to_thread(broker.add_funder_system, FUNDER, "pw-bench", ns, "/", prefix)
            # ``VoucherIssued`` goes where it goes in the system, to payments' and reporting's queues (stand-ins
            # here that nobody reads, removed with the namespace); unrouted, the relay would retry every event
            # and log each failure, in this process, beside the consumer being measured
            events = await ch.get_exchange(f"{ns}.events", ensure=False)
            for sink in SINKS:
                q = await ch.declare_queue(f"{ns}.{sink}", durable=True, arguments={"x-queue-type": "quorum"})
                for key in ("voucher.issued.v1", "voucher.issued.v2"):
                    await q.bind(events, routing_key=key)
            funder = await aio_pika.connect(f"amqp://{user}:pw-bench@{amqp.hostname}:{amqp.port or 5672}/")
            fch = await funder.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await fch.get_exchange(f"{ns}.decisions", ensure=False)

            async def issued() -> int:  # vouchers announced: a voucher.issued.v1 each, or listed in a v2
                async with sessions() as s:
                    return (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.case(
                        (OutboxMessage.routing_key == "voucher.issued.v1", 1),
                        else_=sa.func.json_array_length(sa.cast(OutboxMessage.body, sa.JSON)["data"]["vouchers"]))), 0))
                        .where(OutboxMessage.routing_key.in_(["voucher.issued.v1", "voucher.issued.v2"])))).scalar_one()

            async def replied() -> int:  # the answers waiting on the funder's reply queue (nobody reads them)
                q = await ch.declare_queue(f"{ns}.decision-replies.{FUNDER}", passive=True)
                return q.declaration_result.message_count

            n = len(bodies)
            cpu0 = time.process_time()
            start = time.perf_counter()
            if in_flight:  # the case system's client: a stream of decisions, each reply read and matched
                from seteli_client import CaseSystem

                url = f"amqp://{user}:pw-bench@{amqp.hostname}:{amqp.port or 5672}/"
                async with CaseSystem(url, FUNDER, namespace=ns, reply_prefetch=min(in_flight, 1000)) as cs:
                    got = await cs.decide_many([json.loads(b) for b in bodies], in_flight=in_flight, timeout=600)
                received = time.perf_counter() - start
                accepted = sum(1 for r in got if not isinstance(r, Exception) and r.accepted)
                cpu = time.process_time() - cpu0
                await funder.close()
                await conn.close()
                return {"rate": n / received, "issued": accepted, "replies_rate": n / received, "replies": accepted,
                        "cpu_ms": 1000 * cpu / n}
            await publish_all(exchange, bodies, f"decision.{FUNDER}", window, type=DECISION_TYPE, user_id=user)
            deadline = time.monotonic() + max(300, n / 5)
            while (count := await issued()) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - start
            while (answers := await replied()) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            answered = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            await funder.close()
            await conn.close()
            return {"rate": n / elapsed, "issued": count, "replies_rate": n / answered, "replies": answers,
                    "cpu_ms": 1000 * cpu / n}
    finally:
        if user:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)
        from seteli_shared.manifest import NAMES

        await delete_namespace(AMQP_URL, ns, [f"{ns}.{s}" for s in NAMES] + [f"{ns}.vouchers.decisions",
                                                                             f"{ns}.decision-replies.{FUNDER}"])
        admin = await asyncpg.connect(PG_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=0,
                        help="publish with the case system's client instead (seteli_client.CaseSystem.decide_many, this "
                             "many decisions published and not yet answered at a time), timed until every reply is read")
    parser.add_argument("--issued-events", choices=("v2", "v1", "both"), default=None,
                        help="the vouchers service's ISSUED_EVENTS for the run (default: the service's, v2)")
    args = parser.parse_args()
    bodies = decision_bodies(args.decisions)
    raw1 = await run_raw(bodies, args.window)
    print(f"raw aio-pika publish+consume: {raw1:,.0f} msg/s", flush=True)
    got = await run_service(bodies, args.window, args.in_flight, args.issued_events)
    rate, count = got["rate"], got["issued"]
    if args.in_flight:
        print(f"decisions through the case system's client, {args.in_flight} in flight, until every reply is read: "
              f"{rate:,.0f} decisions/s ({count} of {len(bodies)} accepted)", flush=True)
    else:
        print(f"decisions publish -> VoucherIssued in the outbox: {rate:,.0f} decisions/s ({count} of {len(bodies)})",
              flush=True)
    print(f"decisions publish -> reply on the funder's queue: {got['replies_rate']:,.0f} decisions/s "
          f"({got['replies']} of {len(bodies)}); the process's CPU {got['cpu_ms']:.2f} ms a decision", flush=True)
    raw2 = await run_raw(bodies, args.window)
    print(f"raw aio-pika again: {raw2:,.0f} msg/s", flush=True)
    raw = (raw1 + raw2) / 2
    print(f"decision intake / raw: {100 * rate / raw:.1f} %")
    print(json.dumps({"decisions": len(bodies), "raw_msg_s": round(raw, 1), "decisions_per_s": round(rate, 1),
                      "ratio_percent": round(100 * rate / raw, 1), "issued": count,
                      "replied_per_s": round(got["replies_rate"], 1), "replies": got["replies"],
                      "cpu_ms_per_decision": round(got["cpu_ms"], 3), "load": round(os.getloadavg()[0], 1)}))
    return 0 if count == len(bodies) and got["replies"] == len(bodies) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
