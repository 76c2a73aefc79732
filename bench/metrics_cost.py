"""What the Prometheus metrics cost (issue 22 item 1), each against a raw baseline measured in the same run:

1. **HTTP**: a small Starlette app (one JSON route with a path parameter) called directly through ASGI (no
   server, no socket: the middleware's share is not hidden behind them), raw and then inside
   ``seteli_shared.metrics.HttpMetrics``; alternated, best of the rounds. Prints microseconds per request and
   the ratio.
2. **Counting in a consumer**: what ``Consumer`` adds per batch (``consumed`` processed, ``duplicates``,
   ``consumer_batch``) against an empty loop of the same shape.
3. **A scrape of payments at month end**: a PostgreSQL database of the payments service with ``--charges``
   unpaid accepted charges (default 100,000 over 2,000 provider-funder groups), analysed; the time of
   ``ServiceMetrics.refresh`` with the outbox, jobs and payments sources (median of 7) against the raw
   ``SELECT count(*)`` of the unpaid charges through asyncpg (the least any figure over them costs).

The database ``seteli_bench_metrics_<hex>`` is dropped at the end. Run from the repository root:

    .venv/bin/python bench/metrics_cost.py [--requests 20000] [--charges 100000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from seteli_shared.metrics import HttpMetrics, ServiceMetrics, jobs_source, outbox_source

# bench/payments.py would stand for the payments service's package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def one(request):  # noqa: ANN001, ANN201
    return JSONResponse({"id": request.path_params["item_id"], "ok": True})


def app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", one)])


async def drive(asgi, n: int) -> float:  # noqa: ANN001
    """``n`` GET requests straight into the ASGI app; seconds taken."""
    async def receive():  # noqa: ANN202
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):  # noqa: ANN001, ANN202
        return None

    started = time.perf_counter()
    for i in range(n):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": f"/items/{i}", "raw_path": f"/items/{i}".encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
                 "server": ("bench", 80)}
        await asgi(scope, receive, send)
    return time.perf_counter() - started


async def http_cost(n: int, rounds: int) -> dict:
    raw_app = app()
    measured = app()
    registry = ServiceMetrics("bench")
    wrapped = HttpMetrics(measured, registry=registry)
    await drive(raw_app, 500), await drive(wrapped, 500)  # warm
    raw, with_metrics = [], []
    for _ in range(rounds):
        raw.append(await drive(raw_app, n))
        with_metrics.append(await drive(wrapped, n))
    best_raw, best_metrics = min(raw) / n * 1e6, min(with_metrics) / n * 1e6
    routes = {s.labels["route"] for f in registry.registry.collect() if f.name == "seteli_http_requests"
              for s in f.samples}
    assert routes == {"/items/{item_id}"}, routes  # one template, not 20,000 paths
    return {"raw_us": round(best_raw, 1), "metrics_us": round(best_metrics, 1),
            "added_us": round(best_metrics - best_raw, 1), "ratio": round(best_raw / best_metrics, 3)}


def consumer_cost(batches: int, batch: int) -> dict:
    registry = ServiceMetrics("bench", process=False)
    started = time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        todo = batch
        _ = time.perf_counter() - t, todo
    empty = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        registry.consumed("q", "processed", batch)
        registry.duplicates("q", 0)
        registry.consumer_batch("q", time.perf_counter() - t)
    counted = time.perf_counter() - started
    per_batch = (counted - empty) / batches * 1e6
    return {"batch": batch, "added_us_per_batch": round(per_batch, 2),
            "added_us_per_message": round(per_batch / batch, 3)}


async def scrape_cost(charges: int, groups: int, repeats: int) -> dict:
    from payments import metrics as payments_metrics
    from payments.settings import PaymentsSettings
    from seteli_shared.clock import SystemClock
    from seteli_shared.db import make_engine, session_factory, upgrade_async

    from payments.app import SPEC

    name = f"seteli_bench_metrics_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    engine = None
    try:
        settings = PaymentsSettings(environment="test", database_url=url)
        await upgrade_async(SPEC.migrations_dir, url, settings)
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        try:
            await conn.execute(f"""
                INSERT INTO payments_charge (id, voucher_id, funder_id, provider_id, category, provider_reference,
                    service_date, units_x100, unit_price_cents, amount_cents, own_share_cents, status, accepted_at,
                    price_registered, corrected_units_x100, corrected_amount_cents)
                SELECT 'c' || g, 'v' || (g % 5000), lpad(((g % {groups}) % 50)::text, 3, '0'), 'p' || (g % {groups}),
                    'home_care', 'ref-' || g, current_date - (g % 13), 100, 2500, 2500, 0,
                    CASE WHEN g % 10 = 0 THEN 'settled' ELSE 'accepted' END,
                    now() - ((g % (13 * 24)) || ' hours')::interval, false, 0, 0
                FROM generate_series(1, {charges}) g""")
            await conn.execute("ANALYZE payments_charge")
            unpaid_sql = "SELECT count(*) FROM payments_charge WHERE status = 'accepted' AND settlement_id IS NULL"
            raw = []
            for _ in range(repeats):
                t = time.perf_counter()
                unpaid = await conn.fetchval(unpaid_sql)
                raw.append(time.perf_counter() - t)
        finally:
            await conn.close()
        engine = make_engine(url)
        registry = ServiceMetrics("payments", process=False)
        registry.add_source("outbox", outbox_source(engine))
        registry.add_source("jobs", jobs_source(engine))
        payments_metrics.install(registry, session_factory(engine), SystemClock(), settings)
        await registry.refresh(timeout=60)  # warm (connections, statements)
        timed = []
        for _ in range(repeats):
            t = time.perf_counter()
            await registry.refresh(timeout=60)
            timed.append(time.perf_counter() - t)
        text = registry.exposition().decode()
        assert 'seteli_metrics_source_up{source="payments"} 1.0' in text, text
        assert f"seteli_unpaid_charges {float(unpaid)}" in text, [l for l in text.splitlines() if "unpaid" in l]
        raw_ms, scrape_ms = statistics.median(raw) * 1000, statistics.median(timed) * 1000
        return {"charges": charges, "unpaid": unpaid, "groups": groups, "raw_count_ms": round(raw_ms, 1),
                "scrape_ms": round(scrape_ms, 1), "ratio": round(raw_ms / scrape_ms, 3)}
    finally:
        if engine is not None:
            await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--charges", type=int, default=100000)
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    http = await http_cost(args.requests, args.rounds)
    print(f"HTTP: raw {http['raw_us']} us/request, with HttpMetrics {http['metrics_us']} us "
          f"(+{http['added_us']} us; raw/with = {http['ratio']})")
    consumer = consumer_cost(20000, 128)
    print(f"consumer: +{consumer['added_us_per_batch']} us per batch of {consumer['batch']} "
          f"({consumer['added_us_per_message']} us a message)")
    scrape = await scrape_cost(args.charges, args.groups, args.repeats)
    print(f"scrape of payments with {scrape['unpaid']} unpaid charges in {scrape['groups']} groups: "
          f"{scrape['scrape_ms']} ms (raw count of them {scrape['raw_count_ms']} ms; raw/scrape = {scrape['ratio']})")
    print(json.dumps({"http": http, "consumer": consumer, "scrape": scrape}))


if __name__ == "__main__":
    asyncio.run(main())
