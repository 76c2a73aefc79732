"""Reporting at volume (``make bench-reporting``), on a fresh PostgreSQL database removed afterwards.

1. **fold**: generates ``--charges`` charges' worth of events (default 10,000,000; ``--charges 1000000`` for a
   shorter run) for ``--funders`` funders, 4 service categories, 34 providers per funder and category with
   price lists that change every quarter, one voucher per 20 charges (issued, provider chosen, 1 in 10
   switching), each charge accepted, 90 % of them settled (a few late), 1 % cancelled, over 12 months;
   with ``--small-providers N`` one voucher in N goes to one of 3 small providers per funder and category
   instead (their months have 1-4 clients: the suppression has cells to protect).
   They are folded in the consumer's way: per batch of ``--batch`` events (mixed types, delivery order)
   one transaction that claims the inbox ids, archives the events and folds them
   (``reporting.handlers.archive_many`` + ``fold``, the code the batch handlers run). Event generation and
   envelope serialisation are outside the timed part; the consumer's own work per message (AMQP, JSON
   parse) is measured by ``bench/bus_pipeline.py``.
2. **queries**: p50/p95 of each report's use case (monthly report and its audit, operator statistics and
   theirs, price development, monthly volume, funder figures) over random funders and months, ``--queries``
   each (target: p95 < 50 ms); then the suppression's choice and audit of generated 10 x 200 months.
3. **rebuild**: ``usecases.rebuild`` as the command runs it (fold the whole archive again in time order into
   empty copies of the read models, ``usecases.REBUILD_CHUNK`` events a committed batch, then swap them in)
   and a check that
   the rebuilt read models equal the live ones (row counts and sums of every table).

A final JSON line carries every figure. ``--keep --no-rebuild`` keeps the folded database;
``--database NAME`` measures the queries and the rebuild on it again (same ``--charges``/``--funders``/``--seed``).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg
import sqlalchemy as sa

# this file is named like the reporting package: take its folder off the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.modules.pop("reporting", None)

import os  # noqa: E402

from reporting import usecases  # noqa: E402
from reporting.app import SPEC  # noqa: E402
from reporting.handlers import archive_many, fold  # noqa: E402
from reporting.models import READ_MODELS  # noqa: E402
from seteli_shared import inbox  # noqa: E402
from seteli_shared.db import make_engine, session_factory, upgrade_async  # noqa: E402
from seteli_shared.events import (ChargeAccepted, ChargeCancelled, ChargeSettled, Envelope,  # noqa: E402
                                  PriceListPublished, ProviderApproved, VoucherIssued, VoucherProviderChosen)
from seteli_shared.schemas import PageParams  # noqa: E402

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CATEGORIES = ("home_care", "home_nursing", "cleaning", "meal_service")
PROVIDERS = 34
SMALL = 3
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
TARGET_MS = 50.0
UTC = timezone.utc


def _db_url(name: str, driver: str = "postgresql") -> str:
    u = urlparse(PG_URL)
    return urlunparse(u._replace(scheme=driver, path=f"/{name}"))


# ------------------------------------------------------------------ the events
class World:
    def __init__(self, charges: int, funders: int, rng: random.Random, small: int = 0):
        self.rng = rng
        self.charges = charges
        self.funders = [f"{100 + i:03d}" for i in range(funders)]
        self.vouchers = max(charges // 20, 1)
        self.small = small  # one voucher in ``small`` goes to one of SMALL providers of few clients

    def provider(self, i: int, f: str, c: str, shift: int = 0) -> str:
        """Voucher ``i``'s provider: one of the 34, or (``--small-providers``) now and then one of three
        small ones, whose few clients the reports' suppression has to protect."""
        turn = i // len(self.funders)  # the funder is i modulo their number: count within it
        if self.small and turn % self.small == 0:
            return f"p-{f}-{c}-small-{(turn // self.small + shift) % SMALL}"
        return f"p-{f}-{c}-{(i + shift) % PROVIDERS}"

    def setup(self):  # noqa: ANN201
        """Approvals and the year's price lists (a change every quarter)."""
        for f in self.funders:
            for c in CATEGORIES:
                base = self.rng.randint(2300, 3200)
                for p in range(PROVIDERS):
                    provider = f"p-{f}-{c}-{p}"
                    yield ProviderApproved(approval_id=f"a-{provider}", provider_id=provider, funder_id=f, category=c,
                                           approved_at=datetime(2025, 12, 1, tzinfo=UTC))
                    for q in range(4):
                        eff = date(2026, 1 + 3 * q, 1)
                        yield PriceListPublished(
                            price_list_id=f"pl-{provider}-{q}", provider_id=provider, funder_id=f, category=c,
                            unit="hour", unit_price_cents=base + self.rng.randint(-300, 300) - 10 * q,
                            effective_from=eff, published_at=datetime.combine(eff, datetime.min.time(), UTC))

    def voucher(self, i: int) -> tuple[str, str, str]:
        rng = random.Random(i)
        return f"v{i}", self.funders[i % len(self.funders)], CATEGORIES[rng.randrange(len(CATEGORIES))]

    def vouchers_events(self):  # noqa: ANN201
        bands = ("0-17", "18-64", "65-74", "75-84", "85-89", "90+")
        for i in range(self.vouchers):
            vid, f, c = self.voucher(i)
            extra = {"age_band": bands[i % len(bands)]} if "age_band" in VoucherIssued.model_fields else {}
            at = datetime(2026, 1, 1, 8, tzinfo=UTC) + timedelta(minutes=i % 50000)
            yield VoucherIssued(voucher_id=vid, funder_id=f, client_ref=f"k-{i}", decision_ref=f"D-{i}", category=c,
                                unit="hour", units_per_period=Decimal("20"), period="month",
                                value_per_unit_cents=2500, valid_from=date(2026, 1, 1),
                                valid_until=date(2026, 12, 31), issued_at=at, **extra)
            yield VoucherProviderChosen(voucher_id=vid, funder_id=f, provider_id=self.provider(i, f, c),
                                        category=c, chosen_at=at)
            if i % 10 == 0:
                yield VoucherProviderChosen(voucher_id=vid, funder_id=f, category=c, chosen_at=at + timedelta(days=40),
                                            provider_id=self.provider(i, f, c, 1),
                                            previous_provider_id=self.provider(i, f, c))

    def charge_events(self):  # noqa: ANN201
        """Charges month by month; each batch's settlements follow a little later in the stream."""
        rng = self.rng
        pending: list[ChargeAccepted] = []
        for n in range(self.charges):
            vi = rng.randrange(self.vouchers)
            vid, f, c = self.voucher(vi)
            month = 1 + n * 12 // self.charges
            day = date(2026, month, 1 + rng.randrange(28))
            units = Decimal(rng.choice(("1", "1.5", "2", "3", "4")))
            price = 2300 + rng.randrange(900)
            amount = int(units * price)
            e = ChargeAccepted(charge_id=f"c{n}", voucher_id=vid, funder_id=f, provider_id=self.provider(vi, f, c),
                               category=c, service_date=day, units=units, unit_price_cents=price, amount_cents=amount,
                               own_share_cents=rng.choice((0, 0, 500)),
                               accepted_at=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=18))
            yield e
            pending.append(e)
            if len(pending) >= 1000:
                yield from self._settle(pending)
                pending = []
        yield from self._settle(pending)

    def _settle(self, charges: list[ChargeAccepted]):  # noqa: ANN202
        rng = self.rng
        for e in charges:
            r = rng.random()
            if r < 0.01:
                yield ChargeCancelled(charge_id=e.charge_id, voucher_id=e.voucher_id, funder_id=e.funder_id,
                                      provider_id=e.provider_id, category=e.category, service_date=e.service_date,
                                      units=e.units, amount_cents=e.amount_cents, cancelled_at=e.accepted_at)
            elif r < 0.91:
                fee = (e.amount_cents * 5 + 50) // 100
                days = rng.choice((1, 2, 3, 4, 7)) if r < 0.9 else 16
                yield ChargeSettled(charge_id=e.charge_id, settlement_id=f"s-{e.provider_id}-{e.service_date}",
                                    voucher_id=e.voucher_id, funder_id=e.funder_id, provider_id=e.provider_id,
                                    category=e.category, gross_cents=e.amount_cents, fee_cents=fee,
                                    net_cents=e.amount_cents - fee, settled_at=e.accepted_at + timedelta(days=days))

    def stream(self):  # noqa: ANN201
        yield from self.setup()
        yield from self.vouchers_events()
        yield from self.charge_events()


# ------------------------------------------------------------------ the runs
async def fold_all(sessions, world: World, batch: int) -> dict:  # noqa: ANN001
    events, timed, started = 0, 0.0, time.perf_counter()
    chunk: list = []
    last_print = started

    async def flush() -> None:
        nonlocal events, timed
        items = [(Envelope.wrap(e, "bench"), e) for e in chunk]
        t0 = time.perf_counter()
        async with sessions() as s, s.begin():
            await inbox.claim(s, "bench.reporting", [env.id for env, _ in items])
            await archive_many(s, [env for env, _ in items])
            await fold(s, items)
        timed += time.perf_counter() - t0
        events += len(items)
        chunk.clear()

    for e in world.stream():
        chunk.append(e)
        if len(chunk) >= batch:
            await flush()
            if time.perf_counter() - last_print > 30:
                last_print = time.perf_counter()
                print(f"  ... {events:,} events folded, {events / timed:,.0f}/s", flush=True)
    if chunk:
        await flush()
    return {"events": events, "fold_seconds": round(timed, 1), "events_per_second": round(events / timed),
            "wall_seconds_with_generation": round(time.perf_counter() - started, 1)}


async def measure_queries(sessions, world: World, n: int, rng: random.Random) -> dict:  # noqa: ANN001
    from reporting.usecases import funder_figures

    try:
        from reporting.linked import forget
    except ImportError:  # code from before the linked tables (a comparison run)
        def forget() -> None:
            pass

    cases = {
        "monthly_report": lambda f, m: usecases.monthly_report(sessions, f, m),
        "monthly_audit": lambda f, m: usecases.monthly_audit(sessions, f, m),
        "operator_statistics": lambda f, m: usecases.monthly_report(sessions, None, m),
        "operator_audit": lambda f, m: usecases.monthly_audit(sessions, None, m),
        "price_development": lambda f, m: usecases.price_development(sessions, f, "home_care"),
        "monthly_volume": lambda f, m: usecases.monthly_volume(sessions, f),
        "feedback_page": lambda f, m: usecases.feedback_page(sessions, f, m, PageParams(50, None)),
        "funder_figures": lambda f, m: funder_figures(sessions, f),
    }
    gc.freeze()  # as the service does once started (reporting.app)
    out = {}
    for name, call in cases.items():
        if not hasattr(usecases, "monthly_audit") and "audit" in name:
            continue
        await call(world.funders[0], MONTHS[5])  # warm
        times = []
        for _ in range(n):
            f, m = rng.choice(world.funders), rng.choice(MONTHS)
            forget()  # every call chooses its suppression afresh (no cached choice)
            t0 = time.perf_counter()
            await call(f, m)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        out[name] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1),
                     "under_target": p95 < TARGET_MS}
        print(f"  {name:22s} p50 {out[name]['p50_ms']:7.1f} ms  p95 {p95:7.1f} ms"
              f"  {'ok' if p95 < TARGET_MS else 'OVER the 50 ms target'}", flush=True)
    if hasattr(usecases, "monthly_audit"):  # the same with the choices cached, as a running service has them
        for name in ("monthly_report", "operator_statistics", "price_development", "monthly_volume"):
            times = []
            for _ in range(n):
                f, m = rng.choice(world.funders), rng.choice(MONTHS)
                t0 = time.perf_counter()
                await cases[name](f, m)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            p95 = times[int(0.95 * (len(times) - 1))]
            out[f"{name}_cached"] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(p95, 1),
                                     "under_target": p95 < TARGET_MS}
            print(f"  {name + ' (cached)':32s} p50 {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms", flush=True)
    return out


def measure_suppression(seeds: int = 5) -> dict:
    """The suppression's choice and its audit on generated months of 10 categories x 200 providers (about
    one provider in five with 1-4 clients; ``reporting.samples``), without the database; the cache of
    choices is emptied before each."""
    from reporting import disclosure, linked
    from reporting.samples import random_month

    warm = linked.tables(random_month(99, 3, 20))
    disclosure.audit(warm, disclosure.protect(warm), closed_form=False)  # warm (imports, the solver)
    choose, check, hidden, primary = [], [], [], []
    for seed in range(seeds):
        t = linked.tables(random_month(seed, categories=10, providers=200))
        t0 = time.perf_counter()
        found = disclosure.protect(t)
        t1 = time.perf_counter()
        result = disclosure.audit(t, found)
        t2 = time.perf_counter()
        assert result.passed
        choose.append((t1 - t0) * 1000)
        check.append((t2 - t1) * 1000)
        hidden.append(len(found))
        primary.append(len(t.primary()))
    out = {"months": seeds, "cells": len(t.cells), "primary_cells": primary, "hidden_cells": hidden,
           "choose_ms_max": round(max(choose), 1), "audit_ms_max": round(max(check), 1)}
    print(f"  suppression of a 10 x 200 month ({len(t.cells):,} cells, {min(primary)}-{max(primary)} of 1-4 "
          f"clients): choice max {out['choose_ms_max']} ms, audit max {out['audit_ms_max']} ms", flush=True)
    return out


async def fingerprint(sessions) -> dict:  # noqa: ANN001
    """Row count and the sum of every integer column of every read model."""
    out = {}
    async with sessions() as s:
        for model in READ_MODELS:
            t = model.__table__
            ints = [c for c in t.columns if isinstance(c.type, (sa.Integer, sa.BigInteger))]
            row = (await s.execute(sa.select(sa.func.count(), *[sa.func.coalesce(sa.func.sum(c), 0) for c in ints])
                                   .select_from(t))).tuples().one()
            out[t.name] = [int(x) for x in row]
    return out


async def main(args: argparse.Namespace) -> int:
    reuse = args.database is not None
    name = args.database or f"seteli_bench_reporting_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_URL)
    if not reuse:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(name, "postgresql+asyncpg")
    engine = None
    keep = args.keep or reuse
    try:
        await upgrade_async(SPEC.migrations_dir, url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        rng = random.Random(args.seed)
        world = World(args.charges, args.funders, rng, args.small_providers)
        print(f"reporting bench: {args.charges:,} charges, {world.vouchers:,} vouchers, {args.funders} funders, "
              f"batches of {args.batch}, database {name}", flush=True)
        if reuse:  # folded by an earlier run with --keep (same --charges, --funders, --seed)
            folded = None
        else:
            folded = await fold_all(sessions, world, args.batch)
            print(f"fold: {folded['events']:,} events in {folded['fold_seconds']} s = "
                  f"{folded['events_per_second']:,} events/s (with generation "
                  f"{folded['wall_seconds_with_generation']} s)", flush=True)
        async with engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE"))
            size = (await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar_one()
        print(f"database size {size / 2**30:.2f} GiB", flush=True)
        queries = await measure_queries(sessions, world, args.queries, random.Random(args.seed + 1))
        suppression = measure_suppression() if hasattr(usecases, "monthly_audit") else None
        if args.no_rebuild:
            print(json.dumps({"charges": args.charges, "fold": folded, "queries": queries, "suppression": suppression,
                              "database_bytes": size}))
            return 0
        live = await fingerprint(sessions)
        t0 = time.perf_counter()
        rebuilt = await usecases.rebuild(sessions)  # as `seteli-reporting rebuild` does
        rebuild_s = time.perf_counter() - t0
        same = await fingerprint(sessions) == live
        print(f"rebuild: {rebuilt['events_folded']:,} events in {rebuild_s:.1f} s = "
              f"{rebuilt['events_folded'] / rebuild_s:,.0f} events/s; read models identical: {same}", flush=True)
        result = {"charges": args.charges, "fold": folded, "queries": queries, "suppression": suppression,
                  "rebuild_seconds": round(rebuild_s, 1), "rebuild_identical": same, "database_bytes": size}
        print(json.dumps(result))
        return 0 if same else 1
    finally:
        if engine is not None:
            await engine.dispose()
        if keep:
            print(f"database {name} kept (drop it with: DROP DATABASE \"{name}\")", flush=True)
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=10_000_000)
    parser.add_argument("--funders", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2000, help="events per transaction (the consumer's batch)")
    parser.add_argument("--queries", type=int, default=200, help="calls of each report query")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--small-providers", type=int, default=0, metavar="N",
                        help="one voucher in N goes to one of 3 small providers per funder and category (their "
                             "few clients exercise the suppression; 0: none, as the earlier runs)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database", help="measure an existing database kept by --keep (no fold; kept again)")
    parser.add_argument("--no-rebuild", action="store_true", help="stop after the queries")
    sys.exit(asyncio.run(main(parser.parse_args())))
