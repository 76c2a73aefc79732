"""Where a streamed CSV upload's time goes, in process (issues 19 and 20): the bench's 100,000-line file
(``bench/payments.py``'s ``csv_stream``: 100 vouchers of provider ``p1``, one service date, 0,01 units at 25,00
EUR) through the CSV route's own function (``router._charge_csv``: the reader, ``intake.charge_bulk``, the
engine, the store), on a fresh database seeded as ``bench/payments.py`` seeds it (removed afterwards). No HTTP,
no relay. Each section timed (wall seconds, summed over the chunks): the state load statement by statement, the
rules ruled ahead, each ``COPY``, the commits; beside the process's CPU and the CPU of the PostgreSQL backends
serving it (``/proc``), so that it says whether the time is Python's, PostgreSQL's or waiting.

    .venv/bin/python bench/intake_profile.py [--lines 100000] [--cprofile FILE] [--repeat 1]

Then a raw ``COPY`` of as many lines as ``bench/payments.py``'s raw bulk baseline makes them, on the same
database, for scale (``--raw``).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import secrets
import sys
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import asyncpg  # noqa: E402

PG = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "postgresql+asyncpg://", "postgresql://")
FUNDER = "091"
DAY = date.today() - timedelta(days=1)
T: dict[str, float] = defaultdict(float)
N: dict[str, int] = defaultdict(int)


def _dsn(db: str) -> str:
    base = PG.rsplit("/", 1)[0]
    return f"{base}/{db}"


async def seed(dsn: str, providers: int = 50, vouchers: int = 5000) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO payments_funder (funder_id, operator_fee_rate, charge_deadline_days) "
                           "VALUES ($1, '0.05', 3650)", FUNDER)
        await conn.execute("""
            INSERT INTO payments_approval (funder_id, provider_id, category, approved_at, approval_id, status)
            SELECT $1, 'p' || i, 'home_care', now() - interval '1 year', 'a' || i, 'approved'
            FROM generate_series(0, $2 - 1) i""", FUNDER, providers)
        await conn.execute("""
            INSERT INTO payments_voucher (voucher_id, funder_id, category, issued, units_per_period_x100, period,
                value_per_unit_cents, valid_from, valid_until, provider_id, carry_over, version, kind)
            SELECT 'v' || i, $1, 'home_care', true, 1000000000, 'validity', 2500, current_date - 300,
                current_date + 300, 'p' || (i % $3), false, 0, 'service_voucher' FROM generate_series(0, $2 - 1) i""",
                           FUNDER, vouchers, providers)
        await conn.execute("""
            INSERT INTO payments_provider_choice (voucher_id, chosen_at, provider_id, effective_from)
            SELECT voucher_id, now() - interval '1 year', provider_id, current_date - 300 FROM payments_voucher""")
        await conn.execute("ANALYZE payments_funder, payments_approval, payments_voucher, payments_provider_choice")
    finally:
        await conn.close()


def _timed(owner, name: str, label) -> None:  # noqa: ANN001
    original = getattr(owner, name)

    async def wrapper(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        key = label(*a, **kw) if callable(label) else label
        t0 = time.perf_counter()
        try:
            return await original(*a, **kw)
        finally:
            T[key] += time.perf_counter() - t0
            N[key] += 1
    setattr(owner, name, wrapper)


def instrument() -> None:
    from asyncpg.connection import Connection

    from payments.charging import engine, store
    from seteli_shared import uow

    _timed(Connection, "copy_records_to_table", lambda self, table, **kw: f"copy {table}")
    _timed(store.SessionChargeStore, "load", "load (all)")
    _timed(engine, "rule_ahead", "rule_ahead")
    _timed(uow.SessionUnitOfWork, "_commit", "commit")
    names = {}
    for name in ("codes", "choices_of_provider", "lock", "earlier", "used_per_day", "approvals", "price_lists",
                 "deadlines", "choices"):
        orig = getattr(store._Statements, name)

        def made(self, _orig=orig, _name=name):  # noqa: ANN001, ANN202
            stmt = _orig(self)
            names[id(stmt)] = _name
            return stmt
        setattr(store._Statements, name, made)
    _timed(store.SessionChargeStore, "_all", lambda self, stmt, params: "load: " + names.get(id(stmt), "?"))


def _cpu(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


async def backends(admin: asyncpg.Connection, db: str) -> dict[int, float]:
    return {r["pid"]: _cpu(r["pid"]) for r in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1", db)}


async def body(lines: int, vouchers: list[str], prefix: str = "csv"):  # noqa: ANN201
    part = ["voucher_id;provider_reference;service_date;units;unit_price\n"]
    for i in range(lines):
        part.append(f"{vouchers[i % len(vouchers)]};{prefix}-{i};{DAY.day}.{DAY.month}.{DAY.year};0,01;25,00\n")
        if len(part) >= 1500:
            yield "".join(part).encode()
            part = []
            await asyncio.sleep(0)
    yield "".join(part).encode()


async def raw_copy(dsn: str, total: int, vouchers: list[str], chunk: int = 2500) -> float:
    """``bench/payments.py``'s raw bulk baseline (v2 outbox rows), on p1's vouchers again with other references."""
    import json
    import uuid
    from datetime import datetime, timezone

    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        lines = [(vouchers[i % len(vouchers)], f"rawbulk-{i}", DAY, 1) for i in range(total)]
        for c in range(0, total, chunk):
            part = lines[c:c + chunk]
            async with conn.transaction():
                terms = {v["voucher_id"]: v for v in await conn.fetch(
                    "SELECT voucher_id, funder_id, provider_id, category, value_per_unit_cents FROM payments_voucher"
                    " WHERE voucher_id = ANY($1::text[]) ORDER BY voucher_id FOR UPDATE", sorted({x[0] for x in part}))}
                now = datetime.now(timezone.utc)
                charges, txns, entries, listed = [], [], [], []
                for vid, ref, day, units in part:
                    v = terms[vid]
                    cid, tid = uuid.uuid4().hex, uuid.uuid4().hex
                    amount = units * v["value_per_unit_cents"] // 100
                    charges.append((cid, vid, v["funder_id"], v["provider_id"], v["category"], ref, day, units,
                                    v["value_per_unit_cents"], amount, 0, False, "accepted", now))
                    txns.append((tid, "charge", cid, now))
                    entries += [(tid, f"funder:{v['funder_id']}:voucher_spend", amount),
                                (tid, f"provider:{v['provider_id']}:payable", -amount)]
                    listed.append({"charge_id": cid, "amount_cents": amount})
                outbox = [(uuid.uuid4().hex, "charge.accepted.v2", json.dumps({"charges": listed[k:k + 1000]}), now, 0)
                          for k in range(0, len(listed), 1000)]
                await conn.copy_records_to_table("payments_charge", records=charges, columns=(
                    "id", "voucher_id", "funder_id", "provider_id", "category", "provider_reference", "service_date",
                    "units_x100", "unit_price_cents", "amount_cents", "own_share_cents", "price_registered", "status",
                    "accepted_at"))
                await conn.copy_records_to_table("payments_ledger_transaction", records=txns,
                                                 columns=("id", "kind", "reference", "created_at"))
                await conn.copy_records_to_table("payments_ledger_entry", records=entries,
                                                 columns=("transaction_id", "account", "amount_cents"))
                await conn.copy_records_to_table("outbox", records=outbox, columns=(
                    "message_id", "routing_key", "body", "created_at", "attempts"))
        return total / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("ENVIRONMENT", "test")
    from payments.app import SPEC
    from payments.charging import router
    from payments.charging.rows import AcceptedEvents
    from seteli_shared.auth import Principal, Role
    from seteli_shared.clock import SystemClock
    from seteli_shared.db import make_engine, session_factory, upgrade_async

    db = f"seteli_prof_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        dsn = _dsn(db)
        await upgrade_async(SPEC.migrations_dir, dsn.replace("postgresql://", "postgresql+asyncpg://"))
        await seed(dsn)
        instrument()
        engine_ = make_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"), pool_size=5)
        sessions = session_factory(engine_)
        principal = Principal(subject="bench:p1", roles=frozenset({Role.PROVIDER_BILLING_SYSTEM}), provider_id="p1")
        vouchers = [f"v{i}" for i in range(1, 5000, 50)]
        import gc
        gc.collect()
        gc.freeze()
        for rep in range(args.repeat):
            T.clear()
            N.clear()
            async with sessions() as s:  # a connection in the pool before the clock starts
                await s.connection()
            pg0 = await backends(admin, db)
            cpu0, t0 = time.process_time(), time.perf_counter()
            prof = cProfile.Profile() if args.cprofile else None
            if prof:
                prof.enable()
            gen = body(args.lines, vouchers, f"csv{rep}")
            status, answer = await router._charge_csv(sessions, SystemClock(), principal, "p1", gen,
                                                      AcceptedEvents())
            import json
            t_json = time.perf_counter()
            encoded = json.dumps(answer, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
            T["answer json.dumps"] += time.perf_counter() - t_json
            if prof:
                prof.disable()
                prof.dump_stats(f"{args.cprofile}.{rep}")
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            pg1 = await backends(admin, db)
            pg = sum(c - pg0.get(pid, 0.0) for pid, c in pg1.items())
            print(f"run {rep + 1}: {args.lines} lines, {answer['accepted']} accepted, {wall:.2f} s = "
                  f"{args.lines / wall:,.0f} lines/s; process CPU {cpu:.2f} s, PostgreSQL backends' CPU {pg:.2f} s; "
                  f"load {os.getloadavg()[0]:.2f}; answer {len(encoded) / 2**20:.1f} MiB")
            for k in sorted(T, key=lambda k: -T[k]):
                print(f"   {k:40s} {T[k]:7.3f} s  ({N[k]} calls)")
        if args.raw:
            raw = await raw_copy(dsn, args.lines, vouchers)
            print(f"raw COPY baseline: {raw:,.0f} lines/s")
        await engine_.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--cprofile", default=None, help="write cProfile stats to FILE.<run>")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--raw", action="store_true", help="then the raw COPY baseline on the same database")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
