"""Speed of the public comparison (``GET /public/funders/{f}/categories/{c}/providers``) against a raw
Starlette + asyncpg endpoint doing the same query, both on the real local PostgreSQL, in one run.

1. Creates a database ``seteli_bench_cmp_<hex>``, applies the registry's migrations and seeds, with
   SQL: funder ``091`` with a rulebook for home care and ``--providers`` (500) approved providers, each
   with languages, two service units and three price lists (an old one, the one in force, and a
   future one), plus a second funder with as many providers of its own, so that the query has to
   pick its funder's rows out of others;
2. serves the registry (the real app: request guard, logging, outbox relay) with uvicorn, one
   worker, and loads ``...?voucher_value_cents=2500&units_per_month=20&sort=own_share&limit=50``
   with wrk for ``--seconds`` (10) after a warm-up;
3. serves the baseline (Starlette + asyncpg, the same two statements hand-written, JSON by hand)
   with uvicorn, one worker, and loads the same URL the same way;
4. checks that both answered the same providers in the same order, prints requests/s, latency p50
   and p99 of each and the ratio, then a final JSON line.

Everything it creates (database, bus namespace) is unique to the run and removed at the end.

    .venv/bin/python bench/comparison.py [--providers 500] [--seconds 10] [--connections 16]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse, urlunparse

import asyncpg
import httpx
from seteli_shared.ports import free_port

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: server URL (no database); the benchmark creates and drops its own database there
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent
QUERY = "voucher_value_cents=2500&units_per_month=20&sort=own_share&limit=50"
PATH = "/public/funders/091/categories/home_care/providers"
TARGET_MS = 100.0

# ------------------------------------------------------------------ the baseline
#: the comparison's page, hand-written: approvals in force -> provider -> price in force (ranked)
BASELINE_PAGE = """
WITH in_force AS (
  SELECT provider_id, id, unit, unit_price_cents, weekday_cents, weekday_evening_cents, saturday_cents,
         sunday_cents, effective_from,
         row_number() OVER (PARTITION BY provider_id ORDER BY effective_from DESC, published_at DESC, id DESC) AS rank
  FROM registry_price_list
  WHERE funder_id = $1 AND category = $2 AND status = 'published' AND effective_from <= $3
)
SELECT p.id, p.name, p.contact_email, p.contact_phone, p.languages::text AS languages, f.id AS price_list_id,
       f.unit, f.unit_price_cents, f.weekday_cents, f.weekday_evening_cents, f.saturday_cents, f.sunday_cents,
       f.effective_from,
       CASE WHEN f.unit_price_cents IS NULL THEN 100001
            WHEN f.unit_price_cents - $4 > 0 THEN f.unit_price_cents - $4 ELSE 0 END AS sort_value
FROM registry_approval a
JOIN registry_provider p ON p.id = a.provider_id
LEFT JOIN in_force f ON f.provider_id = p.id AND f.rank = 1
WHERE a.funder_id = $1 AND a.category = $2
  AND (a.status = 'active' OR (a.status IN ('suspended', 'revoked') AND a.status_effective_from > $3))
ORDER BY sort_value, p.id
LIMIT $5
"""
BASELINE_UNITS = """
SELECT provider_id, name, street_address, postal_code, municipality_code FROM registry_service_unit
WHERE provider_id = ANY($1::varchar[]) ORDER BY provider_id, position
"""
TARIFFS = ("weekday", "weekday_evening", "saturday", "sunday")


def baseline_app(dsn: str):  # noqa: ANN201
    """Starlette + asyncpg: the same query, its answer built by hand (no validation, no guard, no logging)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    pool: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):  # noqa: ANN001, ANN202
        pool["p"] = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        yield
        await pool["p"].close()

    async def compare(request):  # noqa: ANN001, ANN202
        q = request.query_params
        value, units, limit = int(q["voucher_value_cents"]), float(q["units_per_month"]), int(q.get("limit", 50))
        from decimal import ROUND_HALF_UP, Decimal
        async with pool["p"].acquire() as conn:
            rows = await conn.fetch(BASELINE_PAGE, request.path_params["funder_id"], request.path_params["category"],
                                    date.today(), value, limit + 1)
            page = rows[:limit]
            unit_rows = await conn.fetch(BASELINE_UNITS, [r["id"] for r in page])
        units_of: dict = {}
        for u in unit_rows:
            units_of.setdefault(u["provider_id"], []).append({
                "name": u["name"], "street_address": u["street_address"], "postal_code": u["postal_code"],
                "municipality_code": u["municipality_code"]})
        items = []
        for r in page:
            price = r["unit_price_cents"]
            share = None if price is None else max(0, price - value)
            monthly = None if share is None else int((Decimal(share) * Decimal(str(units))).quantize(
                Decimal(1), rounding=ROUND_HALF_UP))
            items.append({
                "provider_id": r["id"], "name": r["name"], "contact_email": r["contact_email"],
                "contact_phone": r["contact_phone"], "languages": json.loads(r["languages"] or "[]"),
                "service_units": units_of.get(r["id"], []),
                "price": None if price is None else {
                    "price_list_id": r["price_list_id"], "unit": r["unit"], "unit_price_cents": price,
                    "tariffs": {k: r[f"{k}_cents"] for k in TARIFFS if r[f"{k}_cents"] is not None},
                    "effective_from": r["effective_from"].isoformat()},
                "own_share_cents_per_unit": share, "own_share_cents_per_month": monthly})
        cursor = None
        if len(rows) > limit:
            cursor = "x"  # the baseline does not page further; the cursor's presence is what counts
        return Response(json.dumps({"items": items, "next_cursor": cursor}), media_type="application/json")

    return Starlette(routes=[Route("/public/funders/{funder_id}/categories/{category}/providers", compare)],
                     lifespan=lifespan)


def serve_baseline(dsn: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(dsn), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------ seeding
def _db_url(db_name: str, driver: str = "postgresql") -> str:
    u = urlparse(PG_URL)
    return urlunparse(u._replace(scheme=driver, path=f"/{db_name}"))


def _business_ids() -> Iterator[str]:
    """Distinct valid business IDs (Y-tunnus check digit; a remainder of 1 has no check digit)."""
    for n in range(3000000, 9999999):
        base = f"{n:07d}"
        r = sum(int(d) * w for d, w in zip(base, (7, 9, 10, 5, 8, 4, 2))) % 11
        if r != 1:
            yield f"{base}-{0 if r == 0 else 11 - r}"


async def seed(dsn: str, providers: int, rng: random.Random) -> None:
    today = date.today()
    now = datetime.now(timezone.utc)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for funder in ("091", "049"):
                await conn.execute(
                    "INSERT INTO registry_funder (funder_id, name, kind, operator_fee_rate, settlement_days, created_at)"
                    " VALUES ($1, $2, 'municipality', '0.05', 14, $3)", funder, f"Kunta {funder}", now)
                await conn.execute(
                    "INSERT INTO registry_rulebook (id, funder_id, category, rulebook_version, title,"
                    " price_changes_need_approval, prepayment_check_max_age_days, published_at)"
                    " VALUES ($1, $2, 'home_care', '1', 'Kotihoito', false, 365, $3)", f"rb-{funder}", funder, now)
            prov, units, approvals, lists = [], [], [], []
            business_ids = _business_ids()
            for n in range(providers * 2):
                funder = "091" if n < providers else "049"
                pid = f"{secrets.token_hex(16)}"
                langs = json.dumps(rng.choice([["fi"], ["fi", "sv"], ["fi", "en"], ["sv"], ["fi", "sv", "en"]]))
                prov.append((pid, next(business_ids), f"Hoiva {n:04d} Oy", "FI2112345600000785", now,
                             f"info{n}@hoiva.example", "+358401234567", langs, json.dumps([funder]), now))
                for i in range(2):
                    units.append((f"{pid}-u{i}", pid, i, f"Toimipiste {n}-{i}", f"Katu {n} {i}", "00100",
                                  rng.choice(["091", "049", "092", "235"])))
                approvals.append((f"ap-{pid}", pid, funder, "home_care", now, "active"))
                price = rng.randrange(1800, 3600, 10)
                for k, (days, cents) in enumerate(((-400, price - 200), (-30, price), (60, price + 150))):
                    lists.append((f"pl-{pid}-{k}", pid, funder, "home_care", "hour", cents,
                                  cents + 500 if k == 1 else None, today + timedelta(days=days), "published",
                                  now - timedelta(minutes=3 - k), now - timedelta(minutes=3 - k)))
            await conn.executemany(
                "INSERT INTO registry_provider (id, business_id, name, iban, created_at, contact_email, contact_phone,"
                " languages, municipalities, updated_at, prepayment_registered) VALUES ($1,$2,$3,$4,$5,$6,$7,"
                " $8::json,$9::json,$10, true)", prov)
            await conn.executemany(
                "INSERT INTO registry_service_unit (id, provider_id, position, name, street_address, postal_code,"
                " municipality_code) VALUES ($1,$2,$3,$4,$5,$6,$7)", units)
            await conn.executemany(
                "INSERT INTO registry_approval (id, provider_id, funder_id, category, approved_at, status)"
                " VALUES ($1,$2,$3,$4,$5,$6)", approvals)
            await conn.executemany(
                "INSERT INTO registry_price_list (id, provider_id, funder_id, category, unit, unit_price_cents,"
                " weekday_evening_cents, effective_from, status, created_at, published_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)", lists)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# ------------------------------------------------------------------ load


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as c:
        while True:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start ({url})")
            await asyncio.sleep(0.2)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"]),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run(args: argparse.Namespace) -> int:
    from seteli_shared.testing import delete_namespace

    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    hex_ = secrets.token_hex(4)
    db_name, namespace = f"seteli_bench_cmp_{hex_}", f"benchcmp{hex_}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    procs: list[subprocess.Popen] = []
    try:
        from registry.app import SPEC
        from seteli_shared.db import upgrade_async

        await upgrade_async(SPEC.migrations_dir, _db_url(db_name, "postgresql+asyncpg"))
        t0 = time.perf_counter()
        await seed(_db_url(db_name), args.providers, random.Random(20261125))
        print(f"seeded {args.providers} approved providers for 091 (and {args.providers} for 049), "
              f"3 price lists and 2 service units each, in {time.perf_counter() - t0:.1f} s")

        results, answers = {}, {}
        for label in ("registry", "baseline"):
            port = free_port()
            if label == "registry":
                env = dict(os.environ, DATABASE_URL=_db_url(db_name, "postgresql+asyncpg"), AMQP_URL=AMQP_URL,
                           BUS_NAMESPACE=namespace, ENVIRONMENT="test", LOG_LEVEL=args.log_level)
                # uvicorn itself, one worker: it creates its socket so that TCP_NODELAY is set on every
                # connection (``seteli-registry serve`` binds one of its own without, see bench/README.md)
                cmd = [sys.executable, "-m", "uvicorn", "--factory", "registry.app:create_app", "--host",
                       "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
            else:
                env = dict(os.environ)
                cmd = [sys.executable, __file__, "--serve-baseline", str(port), "--dsn", _db_url(db_name)]
            log = Path(tempfile.gettempdir()) / f"{namespace}-{label}.log"
            proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}{PATH}?{QUERY}"
            try:
                await wait_ready(url, proc)
            except RuntimeError:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            async with httpx.AsyncClient(timeout=10) as c:
                answers[label] = (await c.get(url)).json()
            wrk(url, 2, args.connections, args.threads)  # warm-up
            results[label] = wrk(url, args.seconds, args.connections, args.threads)
            stop(proc)
            log.unlink(missing_ok=True)
            r = results[label]
            print(f"{label:9s} {r['rps']:8.0f} requests/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
                  f"   ({r['requests']} requests, non-2xx {r['non_2xx']}, socket errors {r['socket_errors']})")

        same = [p["provider_id"] for p in answers["registry"]["items"]] == \
            [p["provider_id"] for p in answers["baseline"]["items"]] and \
            [p["own_share_cents_per_month"] for p in answers["registry"]["items"]] == \
            [p["own_share_cents_per_month"] for p in answers["baseline"]["items"]]
        ratio = results["registry"]["rps"] / results["baseline"]["rps"]
        print(f"registry/baseline: {ratio:.1%} of the raw requests/s; same answer: {same}; "
              f"registry p99 {'under' if results['registry']['p99_ms'] < TARGET_MS else 'OVER'} {TARGET_MS:.0f} ms")
        print(json.dumps({"providers": args.providers, "seconds": args.seconds, "connections": args.connections,
                          "registry": results["registry"], "baseline": results["baseline"],
                          "ratio": round(ratio, 4), "same_answer": same}))
        return 0 if same and all(r["non_2xx"] == 0 for r in results.values()) else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop(proc)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        try:
            await delete_namespace(AMQP_URL, namespace, [])
        except Exception as exc:  # noqa: BLE001  the broker may be away; the database is what matters
            print(f"could not delete bus namespace {namespace}: {exc}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", type=int, default=500, help="approved providers of the compared funder")
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    p.add_argument("--connections", type=int, default=16, help="wrk connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--log-level", default="info", help="the registry's LOG_LEVEL (info logs every request)")
    p.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.dsn, args.serve_baseline)
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
