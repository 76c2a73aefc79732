"""One and then two instances of the busiest consumer (``make bench-scaling``): the reporting service, which folds
every charge event into its read models, draining the same queue of charge events.

For each number of instances (``--instances 1 2``): a fresh PostgreSQL database and bus namespace; the reporting
queue is declared as the service declares it, and ``--events`` ChargeAccepted events (with their funder's
registration and their vouchers' issue before them, ``--per-voucher`` charges a voucher) are published into it
first; then that many ``seteli-reporting`` processes start on the one database and drain it. Timed from the
first event folded (the inbox's first row) to the last; CPU is the user and system time the instances' processes
used meanwhile (from /proc), so that the gain of the second instance can be told from the machine's other load.

It prints one line per run and the factor (events/s with two over events/s with one), then a JSON line with
every figure. Everything the runs create (databases, queues, exchanges) is removed at the end.

    make bench-scaling                            # 10,000 events
    make bench-scaling ARGS="--events 40000"
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import aio_pika
import asyncpg

from seteli_shared.bus import quorum_queue_arguments
from seteli_shared.events import ChargeAccepted, Envelope, FunderRegistered, VoucherIssued
from seteli_shared.testing import delete_namespace

BIN = Path(sys.executable).parent
ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TICKS = os.sysconf("SC_CLK_TCK")


def events(n: int, per_voucher: int) -> list[Envelope]:
    now, today = datetime.now(timezone.utc), date.today()
    out = [Envelope.wrap(FunderRegistered(funder_id="091", name="Kunta", kind="municipality",
                                          operator_fee_rate="0.05", registered_at=now), "registry")]
    vouchers = [f"v{i:06d}" for i in range((n + per_voucher - 1) // per_voucher)]
    out += [Envelope.wrap(VoucherIssued(voucher_id=v, funder_id="091", client_ref=f"c-{v}", decision_ref=f"d-{v}",
                                        category="home_care", unit="hour", units_per_period=100, period="month",
                                        value_per_unit_cents=2500, valid_from=today - timedelta(days=60),
                                        valid_until=today + timedelta(days=300), issued_at=now), "vouchers")
            for v in vouchers]
    out += [Envelope.wrap(ChargeAccepted(charge_id=f"c{i:07d}", voucher_id=vouchers[i // per_voucher],
                                         funder_id="091", provider_id=f"p{i % 34:02d}", category="home_care",
                                         service_date=today - timedelta(days=i % 28), units=2, unit_price_cents=2500,
                                         amount_cents=5000, own_share_cents=0, accepted_at=now), "payments")
            for i in range(n)]
    return out


async def preload(namespace: str, envelopes: list[Envelope], routing_keys: list[str]) -> None:
    """The reporting queue as the service declares it, bound to what it consumes, then every event into it."""
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(f"{namespace}.dlx", aio_pika.ExchangeType.DIRECT, durable=True)
        dlq = await channel.declare_queue(f"{namespace}.reporting.dlq", durable=True,
                                          arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, routing_key=f"{namespace}.reporting")
        queue = await channel.declare_queue(f"{namespace}.reporting", durable=True, arguments=quorum_queue_arguments(
            dlx.name, f"{namespace}.reporting", 5))
        for key in routing_keys:
            await queue.bind(exchange, key)
        window = 500
        for i in range(0, len(envelopes), window):
            await asyncio.gather(*(exchange.publish(
                aio_pika.Message(e.model_dump_json().encode(), message_id=e.id, type=e.type, app_id="bench",
                                 content_type="application/cloudevents+json; charset=utf-8",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), e.routing_key, timeout=60)
                for e in envelopes[i:i + window]))
    finally:
        await connection.close()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def run(instances: int, envelopes: list[Envelope], routing_keys: list[str], workdir: Path) -> dict:
    name = f"seteli_bench_scaling_{uuid.uuid4().hex[:8]}"
    namespace = f"benchscale{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run([str(BIN / "seteli-reporting"), "migrate"], check=True, capture_output=True,
                       env=dict(os.environ, DATABASE_URL=url, ENVIRONMENT="test"))
        await preload(namespace, envelopes, routing_keys)
        env = dict(os.environ, DATABASE_URL=url, AMQP_URL=AMQP, BUS_NAMESPACE=namespace, ENVIRONMENT="test",
                   MIGRATE_ON_START="false", LOG_LEVEL="WARNING", DATA_DIR=str(workdir))
        for i in range(instances):
            with (workdir / f"{namespace}-{i}.log").open("wb") as log:
                procs.append(subprocess.Popen([str(BIN / "seteli-reporting"), "serve", "--port", "0"], env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
        db = await asyncpg.connect(dsn)
        try:
            total, first, cpu_first = len(envelopes), None, 0.0
            while True:
                done = await db.fetchval("SELECT count(*) FROM inbox")
                now = time.monotonic()
                if first is None and done:
                    first, done_first, cpu_first = now, done, cpu_seconds([p.pid for p in procs])
                if done >= total:
                    cpu = cpu_seconds([p.pid for p in procs]) - cpu_first
                    break
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a reporting instance ended: see {workdir}")
                await asyncio.sleep(0.05)
        finally:
            await db.close()
        seconds = now - first
        folded = total - done_first
        return {"instances": instances, "events": folded, "seconds": round(seconds, 2),
                "events_per_second": round(folded / seconds), "cpu_seconds": round(cpu, 2),
                "cpu_ms_per_event": round(cpu * 1000 / folded, 3)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        await delete_namespace(AMQP, namespace, [f"{namespace}.reporting"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="charge events to drain (default 10,000)")
    parser.add_argument("--per-voucher", type=int, default=20, help="charges per voucher (default 20)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from reporting.app import SPEC

    envelopes = events(args.events, args.per_voucher)
    results = []
    with tempfile.TemporaryDirectory(prefix="seteli-bench-scaling-") as tmp:
        for n in args.instances:
            r = await run(n, envelopes, SPEC.routing_keys, Path(tmp))
            results.append(r)
            print(f"{n} instance(s): {r['events']} events in {r['seconds']} s = {r['events_per_second']}/s, "
                  f"CPU {r['cpu_seconds']} s ({r['cpu_ms_per_event']} ms per event)", flush=True)
    base = results[0]["events_per_second"]
    factors = {r["instances"]: round(r["events_per_second"] / base, 2) for r in results}
    print("scaling factor (events/s against one instance): "
          + ", ".join(f"{n}: x{f}" for n, f in factors.items()) + f"; {os.cpu_count()} CPUs, load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(json.dumps({"runs": results, "factors": factors, "cpus": os.cpu_count(), "load": os.getloadavg()}))


if __name__ == "__main__":
    asyncio.run(main())
