"""Payments against raw baselines (``make bench-payments``), on a fresh PostgreSQL database removed afterwards:

1. **single charges over HTTP**: the payments app served by uvicorn (one worker, uvicorn's own socket, so
   IPPROTO_TCP and TCP_NODELAY) loaded with wrk; a Lua script posts distinct provider references against
   ``--vouchers`` vouchers, each with its chosen provider's token. Beside it a raw Starlette + asyncpg
   endpoint doing the minimal work (validate, lock the voucher, insert the charge and an outbox row). Both
   servers run at once and their wrk runs alternate (``--rounds``), the payments relay draining its outbox
   before the baseline's turn. Prints requests/s, p50, p99, each round's ratio and the overall ratio.
2. **bulk intake** (``POST /charges/bulk``) if the app has it: ``--bulk-requests`` of ``--bulk-lines`` lines,
   then a raw bulk baseline on the same database (chunks of 2,500 lines: vouchers locked, charges, ledger
   transactions and entries and outbox rows by COPY, as ``--accepted-events`` says). Prints lines/s (until the
   last answer, and until the relay has published every accepted event) and the ratio. ``--relay process`` serves payments with ``RELAY=process``
   (its outbox relay a child process instead of a task in the worker's event loop). Then one **streamed CSV
   file** of ``--csv-lines`` lines (100,000: a month-end file) sent as it is generated: lines/s, and the
   worker's resident memory before and at its highest beside the file's size.
3. **a settlement run** over ``--charges`` accepted charges (200,000; ``--charges 1000000`` for the full
   figure) inserted by raw SQL: ``settlement.runs.settle`` (an operator's run: every group paid, its payouts and
   notices recorded) in one transaction, beside a raw-SQL baseline
   doing the same work (group, insert settlement rows, update the charges, insert ledger transactions and
   entries and the outbox rows: one per settlement, one ``settlement.created`` per settlement and, as
   ``--settled-events`` says, one ``charge.settled.v2`` per chunk of ``--settled-event-charges`` charges of a
   settlement and/or one ``charge.settled.v1`` per charge) on the same charges seeded again. Prints charges/s and
   the ratio; ``--settled-events v1,v2`` runs both kinds one after the other, ``--settlement-only`` only this.

A final JSON line carries every figure. Exit 1 if a response was not 2xx or the ledger check failed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

# this file is named like the payments package: take its folder off the path, load comparison.py by path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.modules.pop("payments", None)


def _comparison():  # noqa: ANN202
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_comparison", _HERE / "comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


comparison = _comparison()
AMQP_URL, PG_URL, _db_url, free_port, stop, wait_ready, wrk = (
    comparison.AMQP_URL, comparison.PG_URL, comparison._db_url, comparison.free_port, comparison.stop,
    comparison.wait_ready, comparison.wrk)

FUNDER = "091"
#: yesterday: within the vouchers' validity and the funder's charging deadline
SERVICE_DAY = (date.today() - timedelta(days=1)).isoformat()


# ------------------------------------------------------------------ the raw baseline endpoint
def baseline_app(dsn: str):  # noqa: ANN201
    import uuid
    from contextlib import asynccontextmanager
    from datetime import datetime, timezone

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):  # noqa: ANN001, ANN202
        state["pool"] = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
        yield
        await state["pool"].close()

    async def charge(request):  # noqa: ANN001, ANN202
        body = await request.json()
        try:
            voucher_id, ref = str(body["voucher_id"]), str(body["provider_reference"])
            day = date.fromisoformat(body["service_date"])
            units_x100 = int(Decimal(body["units"]) * 100)
        except (KeyError, ValueError, ArithmeticError):
            return JSONResponse({"error": "invalid"}, 422)
        if units_x100 <= 0 or day > date.today() or not 0 < len(ref) <= 100:
            return JSONResponse({"error": "invalid"}, 422)
        now = datetime.now(timezone.utc)
        async with state["pool"].acquire() as conn, conn.transaction():
            v = await conn.fetchrow("SELECT provider_id, funder_id, category, value_per_unit_cents FROM payments_voucher "
                                    "WHERE voucher_id = $1 FOR UPDATE", voucher_id)
            if v is None:
                return JSONResponse({"error": "not_found"}, 404)
            cid = uuid.uuid4().hex
            amount = units_x100 * v["value_per_unit_cents"] // 100
            await conn.execute(
                "INSERT INTO payments_charge (id, voucher_id, funder_id, provider_id, category, provider_reference,"
                " service_date, units_x100, unit_price_cents, amount_cents, own_share_cents, price_registered, status,"
                " accepted_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,0,false,'accepted',$11)",
                cid, voucher_id, v["funder_id"], v["provider_id"], v["category"], ref, day, units_x100,
                v["value_per_unit_cents"], amount, now)
            await conn.execute(
                "INSERT INTO outbox (message_id, routing_key, body, created_at, attempts) VALUES ($1,$2,$3,$4,0)",
                uuid.uuid4().hex, "charge.accepted.v1", json.dumps({"charge_id": cid, "amount_cents": amount}), now)
        return JSONResponse({"id": cid, "amount_cents": amount}, 201)

    return Starlette(routes=[Route("/charges", charge, methods=["POST"]),
                             Route("/health/ready", lambda r: JSONResponse({"ok": True}))], lifespan=lifespan)


# ------------------------------------------------------------------ seeding
async def seed_projections(dsn: str, providers: int, vouchers: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # its charging deadline never reached: the bench charges services of SERVICE_DAY whatever today is
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
                current_date + 300,
                'p' || (i % $3), false, 0, 'service_voucher' FROM generate_series(0, $2 - 1) i""",
                           FUNDER, vouchers, providers)
        await conn.execute("""
            INSERT INTO payments_provider_choice (voucher_id, chosen_at, provider_id, effective_from)
            SELECT voucher_id, now() - interval '1 year', provider_id, current_date - 300 FROM payments_voucher""")
        # only the seeded projections: an ANALYZE of the still empty charge and ledger tables records them as
        # empty, and a connection then keeps checking the ledger entries' foreign key by scanning the ledger's
        # transactions (cached plan) until autovacuum analyzes them again: minutes on a busy machine, and each
        # COPY of 5,000 entries took 20 s (a fresh database never analyzed does not do that)
        await conn.execute("ANALYZE payments_funder, payments_approval, payments_voucher, payments_provider_choice")
    finally:
        await conn.close()


async def seed_charges(dsn: str, charges: int, providers: int, vouchers: int) -> None:
    """``charges`` accepted charges with their ledger transactions, as the single-charge path leaves them."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE payments_charge_correction, payments_charge, payments_settlement, "
                           "payments_ledger_entry, payments_ledger_transaction, outbox")
        await conn.execute("""
            INSERT INTO payments_charge (id, voucher_id, funder_id, provider_id, category, provider_reference,
                service_date, units_x100, unit_price_cents, amount_cents, own_share_cents, price_registered,
                status, accepted_at)
            SELECT 'c' || i, 'v' || (i % $2), $4, 'p' || ((i % $2) % $3), 'home_care', 'r' || i,
                DATE '2026-06-01' + (i % 28), 100, 2500 + (i % 7), 2500 + (i % 7), 0, false, 'accepted',
                now() - interval '1 day' + i * interval '1 microsecond'
            FROM generate_series(0, $1 - 1) i""", charges, vouchers, providers, FUNDER)
        await conn.execute("""INSERT INTO payments_ledger_transaction (id, kind, reference, created_at)
                              SELECT 't' || id, 'charge', id, accepted_at FROM payments_charge""")
        await conn.execute("""
            INSERT INTO payments_ledger_entry (transaction_id, account, amount_cents)
            SELECT 't' || id, 'funder:' || funder_id || ':voucher_spend', amount_cents FROM payments_charge
            UNION ALL
            SELECT 't' || id, 'provider:' || provider_id || ':payable', -amount_cents FROM payments_charge""")
        await conn.execute("VACUUM ANALYZE payments_charge")
    finally:
        await conn.close()


# ------------------------------------------------------------------ the raw settlement baseline
RAW_SETTLEMENT = [
    """CREATE TEMP TABLE sc ON COMMIT DROP AS
       SELECT id, funder_id, provider_id, voucher_id, category, amount_cents,
              'bs' || dense_rank() OVER (ORDER BY funder_id, provider_id) AS sid,
              sum(amount_cents) OVER g AS gross,
              round(sum(amount_cents) OVER g * 0.05)::bigint AS fee_total,
              row_number() OVER (PARTITION BY funder_id, provider_id ORDER BY accepted_at, id) AS rn,
              0::bigint AS fee
       FROM (SELECT * FROM payments_charge WHERE status = 'accepted' AND settlement_id IS NULL FOR UPDATE) c
       WINDOW g AS (PARTITION BY funder_id, provider_id)""",
    # the fee spread over the charges to the cent: each its floor share, the remainder a cent each in order
    """UPDATE sc SET fee = amount_cents * fee_total / gross""",
    """UPDATE sc SET fee = sc.fee + 1 FROM (SELECT sid, fee_total - sum(fee) AS rest FROM sc GROUP BY sid, fee_total) r
       WHERE r.sid = sc.sid AND sc.rn <= r.rest""",
    """INSERT INTO payments_settlement (id, funder_id, provider_id, charge_count, gross_cents, fee_cents, net_cents,
           fee_rate, created_at)
       SELECT sid, funder_id, provider_id, count(*), sum(amount_cents), sum(fee), sum(amount_cents) - sum(fee), '0.05',
              now() FROM sc GROUP BY sid, funder_id, provider_id""",
    """UPDATE payments_charge c SET status = 'settled', settlement_id = sc.sid, fee_cents = sc.fee,
           net_cents = sc.amount_cents - sc.fee FROM sc WHERE c.id = sc.id""",
    """INSERT INTO payments_ledger_transaction (id, kind, reference, created_at)
       SELECT 'bt' || id, 'settlement', id, now() FROM payments_settlement WHERE id LIKE 'bs%'""",
    """INSERT INTO payments_ledger_entry (transaction_id, account, amount_cents)
       SELECT 'bt' || id, 'provider:' || provider_id || ':payable', gross_cents FROM payments_settlement
       UNION ALL SELECT 'bt' || id, 'operator:fee_revenue', -fee_cents FROM payments_settlement
       UNION ALL SELECT 'bt' || id, 'provider:' || provider_id || ':payout_due', -net_cents FROM payments_settlement""",
    """INSERT INTO outbox (message_id, routing_key, body, created_at, attempts)
       SELECT gen_random_uuid()::text, 'settlement.created.v1', json_build_object('type', 'settlement.created',
              'data', json_build_object('settlement_id', id, 'funder_id', funder_id, 'provider_id', provider_id,
              'charge_count', charge_count, 'gross_cents', gross_cents, 'fee_cents', fee_cents,
              'net_cents', net_cents))::text, now(), 0 FROM payments_settlement""",
]
#: the settled charges' events, as payments' SETTLED_EVENTS says: v1 one outbox row per charge
RAW_SETTLED_V1 = """INSERT INTO outbox (message_id, routing_key, body, created_at, attempts)
       SELECT gen_random_uuid()::text, 'charge.settled.v1', json_build_object('type', 'charge.settled',
              'data', json_build_object('charge_id', id, 'settlement_id', sid, 'voucher_id', voucher_id,
              'funder_id', funder_id, 'provider_id', provider_id, 'category', category, 'gross_cents', amount_cents,
              'fee_cents', fee, 'net_cents', amount_cents - fee))::text, now(), 0 FROM sc"""
#: v2 one outbox row per settlement chunk of at most %(per_event)d charges, listing them in order
RAW_SETTLED_V2 = """INSERT INTO outbox (message_id, routing_key, body, created_at, attempts)
       SELECT gen_random_uuid()::text, 'charge.settled.v2', json_build_object('type', 'charge.settled',
              'data', json_build_object('settlement_id', sid, 'funder_id', funder_id, 'provider_id', provider_id,
              'charges', json_agg(json_build_object('charge_id', id, 'voucher_id', voucher_id, 'category', category,
              'gross_cents', amount_cents, 'fee_cents', fee, 'net_cents', amount_cents - fee) ORDER BY rn)))::text,
              now(), 0 FROM sc GROUP BY sid, funder_id, provider_id, (rn - 1) / %(per_event)d"""


def raw_settlement_sql(events: str, per_event: int) -> list[str]:
    """The raw baseline's statements for payments' SETTLED_EVENTS (v1, v2 or both) and SETTLED_EVENT_CHARGES."""
    return RAW_SETTLEMENT + ([RAW_SETTLED_V1] if events in ("v1", "both") else []) + (
        [RAW_SETTLED_V2 % {"per_event": int(per_event)}] if events in ("v2", "both") else [])


async def raw_settlement(dsn: str, events: str = "v2", per_event: int = 1000) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        async with conn.transaction():
            for sql in raw_settlement_sql(events, per_event):
                await conn.execute(sql)
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def service_settlement(url: str, events: str = "v2", per_event: int = 1000) -> tuple[float, int, dict]:
    from payments.ledger.check import ledger_check
    from payments.settlement.domain import PayoutRules
    from payments.settlement.runs import settle
    from seteli_shared.clock import SystemClock
    from seteli_shared.db import make_engine, session_factory, unit_of_work
    from seteli_shared.logging import configure_logging

    configure_logging("payments", "WARNING", True)
    engine = make_engine(url)
    try:
        sessions = session_factory(engine)
        t0 = time.perf_counter()
        async with unit_of_work(sessions) as session:
            made = (await settle(session, SystemClock(), Decimal("0.05"), PayoutRules(), hold_back=False,
                                 settled_events=events, settled_event_charges=per_event)).settlements
        elapsed = time.perf_counter() - t0
        async with sessions() as session:
            check = await ledger_check(session)
        return elapsed, len(made), check
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ the raw bulk baseline
RAW_BULK_CHUNK = 2500


async def raw_bulk(dsn: str, args: argparse.Namespace) -> float:
    """The bulk's minimal work by hand: per chunk of lines one transaction that locks the chunk's vouchers (in
    order), reads their terms, and writes the charges, their ledger transactions and entries and their outbox rows
    by COPY: one a charge (``--accepted-events v1``) or one per funder and chunk of ``--accepted-event-charges``
    (``v2``, as payments' bulk now writes them). Same lines as ``bulk`` (another provider's vouchers, so that nothing
    is a repeat)."""
    import uuid
    from datetime import datetime, timezone

    conn = await asyncpg.connect(dsn)
    try:
        vouchers = [f"v{i}" for i in range(1, args.vouchers, args.providers)]  # p1's
        total = raw_lines(args)
        t0 = time.perf_counter()
        for r in range(0, total, args.bulk_lines):
            day = date.fromisoformat(SERVICE_DAY)
            lines = [(vouchers[(r + i) % len(vouchers)], f"rawbulk-{r}-{i}", day, 1)
                     for i in range(min(args.bulk_lines, total - r))]
            for c in range(0, len(lines), RAW_BULK_CHUNK):
                chunk = lines[c:c + RAW_BULK_CHUNK]
                async with conn.transaction():
                    terms = {v["voucher_id"]: v for v in await conn.fetch(
                        "SELECT voucher_id, funder_id, provider_id, category, value_per_unit_cents "
                        "FROM payments_voucher"
                        " WHERE voucher_id = ANY($1::text[]) ORDER BY voucher_id FOR UPDATE",
                        sorted({x[0] for x in chunk}))}
                    now = datetime.now(timezone.utc)
                    charges, txns, entries, outbox = [], [], [], []
                    listed: dict[str, list[dict]] = {}
                    for vid, ref, day, units_x100 in chunk:
                        v = terms[vid]
                        cid, tid = uuid.uuid4().hex, uuid.uuid4().hex
                        amount = units_x100 * v["value_per_unit_cents"] // 100
                        charges.append((cid, vid, v["funder_id"], v["provider_id"], v["category"], ref, day, units_x100,
                                        v["value_per_unit_cents"], amount, 0, False, "accepted", now))
                        txns.append((tid, "charge", cid, now))
                        entries += [(tid, f"funder:{v['funder_id']}:voucher_spend", amount),
                                    (tid, f"provider:{v['provider_id']}:payable", -amount)]
                        if args.accepted_events in ("v1", "both"):
                            outbox.append((uuid.uuid4().hex, "charge.accepted.v1",
                                           json.dumps({"charge_id": cid, "amount_cents": amount}), now, 0))
                        listed.setdefault(v["funder_id"], []).append({"charge_id": cid, "amount_cents": amount})
                    if args.accepted_events in ("v2", "both"):  # one row per funder and chunk of charges
                        for funder_id, its in listed.items():
                            for k in range(0, len(its), args.accepted_event_charges):
                                outbox.append((uuid.uuid4().hex, "charge.accepted.v2", json.dumps({
                                    "funder_id": funder_id, "charges": its[k:k + args.accepted_event_charges]}),
                                    now, 0))
                    await conn.copy_records_to_table("payments_charge", records=charges, columns=(
                        "id", "voucher_id", "funder_id", "provider_id", "category", "provider_reference",
                        "service_date",
                        "units_x100", "unit_price_cents", "amount_cents", "own_share_cents", "price_registered",
                        "status", "accepted_at"))
                    await conn.copy_records_to_table("payments_ledger_transaction", records=txns,
                                                     columns=("id", "kind", "reference", "created_at"))
                    await conn.copy_records_to_table("payments_ledger_entry", records=entries,
                                                     columns=("transaction_id", "account", "amount_cents"))
                    await conn.copy_records_to_table("outbox", records=outbox, columns=(
                        "message_id", "routing_key", "body", "created_at", "attempts"))
        return total / (time.perf_counter() - t0)
    finally:
        await conn.close()


def raw_lines(args: argparse.Namespace) -> int:
    """Lines of the raw COPY baseline: ``--raw-bulk-lines``, else as many as the JSON bulk sent."""
    return args.raw_bulk_lines or args.bulk_requests * args.bulk_lines


# ------------------------------------------------------------------ wrk
LUA = """
local tokens = {%(tokens)s}
local vouchers, providers = %(vouchers)d, %(providers)d
local counter = 0
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args) math.randomseed(os.time() + (tid or 0) * 7919) end
request = function()
  counter = counter + 1
  local v = math.random(0, vouchers - 1)
  local body = string.format('{"voucher_id":"v%%d","provider_reference":"%(prefix)s-%%d-%%d","service_date":"%(day)s","units":"0.01"}',
                             v, tid or 0, counter)
  return wrk.format("POST", "/charges", {["Content-Type"] = "application/json",
                                         ["Authorization"] = "Bearer " .. tokens[(v %% providers) + 1]}, body)
end
"""


def lua_script(prefix: str, vouchers: int, providers: int) -> Path:
    from seteli_shared.auth import mint

    tokens = ",".join(f'"{mint(f"bench:p{i}", ["provider_charger"], provider_id=f"p{i}", ttl=86400)}"'
                      for i in range(providers))
    path = Path(tempfile.gettempdir()) / f"bench-payments-{prefix}.lua"
    path.write_text(LUA % {"tokens": tokens, "vouchers": vouchers, "providers": providers, "prefix": prefix,
                           "day": SERVICE_DAY})
    return path


def wrk_post(url: str, script: Path, seconds: int, connections: int, threads: int) -> dict:
    real = comparison.subprocess.run

    def with_script(cmd, **kw):  # noqa: ANN001, ANN003, ANN202
        return real([*cmd[:-1], "-s", str(script), cmd[-1]], **kw)

    comparison.subprocess.run = with_script
    try:
        return wrk(url, seconds, connections, threads)
    finally:
        comparison.subprocess.run = real


async def outbox_drained(dsn: str, timeout: float = 120) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def bind_sink(namespace: str) -> None:
    """A queue taking every event of the namespace, so that the relay's publishes are routed (as deployed)."""
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(f"{namespace}.sink", durable=True)
        await q.bind(ex, "#")


async def run(args: argparse.Namespace) -> int:
    from seteli_shared.testing import delete_namespace

    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    hex_ = secrets.token_hex(4)
    db_name, namespace = f"seteli_bench_pay_{hex_}", f"benchpay{hex_}"
    dsn, url = _db_url(db_name), _db_url(db_name, "postgresql+asyncpg")
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    procs: list[subprocess.Popen] = []
    figures: dict = {"providers": args.providers, "vouchers": args.vouchers, "seconds": args.seconds,
                     "connections": args.connections, "relay": args.relay}
    ok = True
    figures["load_before"] = os.getloadavg()[0]
    try:
        from payments.app import SPEC
        from seteli_shared.db import upgrade_async

        await upgrade_async(SPEC.migrations_dir, url)
        await seed_projections(dsn, args.providers, args.vouchers)
        if args.settlement_only:
            ok = await settlement(dsn, url, args, figures)
            print(json.dumps(figures))
            return 0 if ok else 1

        # ---- 1. single charges over HTTP: both servers up, their wrk runs alternated (the machine is shared:
        # load that comes and goes then falls on both alike)
        servers: dict[str, tuple[str, subprocess.Popen, Path]] = {}
        for label in ("payments", "baseline"):
            port = free_port()
            if label == "payments":
                env = dict(os.environ, DATABASE_URL=url, AMQP_URL=AMQP_URL, BUS_NAMESPACE=namespace,
                           ENVIRONMENT="test", LOG_LEVEL=args.log_level, RELAY=args.relay,
                           ACCEPTED_EVENTS=args.accepted_events,
                           ACCEPTED_EVENT_CHARGES=str(args.accepted_event_charges))
                cmd = [sys.executable, "-m", "uvicorn", "--factory", "payments.app:create_app", "--host", "127.0.0.1",
                       "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"]
            else:
                env = dict(os.environ)
                cmd = [sys.executable, __file__, "--serve-baseline", str(port), "--dsn", dsn]
            log = Path(tempfile.gettempdir()) / f"{namespace}-{label}.log"
            proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            try:
                await wait_ready(f"{base}/health/ready", proc)
            except RuntimeError:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            if label == "payments":
                await bind_sink(namespace)
            try:  # warm-up (a busy machine may answer too few to give a latency distribution)
                wrk_post(base, lua_script(f"{label}-warm-{hex_}", args.vouchers, args.providers), 2, args.connections,
                         args.threads)
            except (KeyError, AttributeError):
                pass
            servers[label] = (base, proc, log)
        runs: dict[str, list[dict]] = {"payments": [], "baseline": []}
        for r in range(args.rounds if args.single else 0):
            for label in ("payments", "baseline"):
                base = servers[label][0]
                runs[label].append(wrk_post(base, lua_script(f"{label}-{hex_}-{r}", args.vouchers, args.providers),
                                            args.seconds, args.connections, args.threads))
                if label == "payments":  # its relay publishes what the round charged before the baseline's turn
                    await outbox_drained(dsn)
            print(f"  round {r + 1}: payments {runs['payments'][-1]['rps']:.0f} requests/s, baseline "
                  f"{runs['baseline'][-1]['rps']:.0f} requests/s: "
                  f"{runs['payments'][-1]['rps'] / runs['baseline'][-1]['rps']:.1%}")
        for label in ("payments", "baseline") if args.single else ():
            rs = runs[label]
            r = {"rps": round(sum(x["requests"] for x in rs) / (args.seconds * len(rs)), 2),
                 "p50_ms": sorted(x["p50_ms"] for x in rs)[len(rs) // 2],
                 "p99_ms": sorted(x["p99_ms"] for x in rs)[len(rs) // 2],
                 "requests": sum(x["requests"] for x in rs), "non_2xx": sum(x["non_2xx"] for x in rs),
                 "socket_errors": [x["socket_errors"] for x in rs if x["socket_errors"]] or None,
                 "rounds": [x["rps"] for x in rs]}
            figures[f"charges_{label}"] = r
            ok &= r["non_2xx"] == 0
            print(f"single charges, {label:8s} {r['rps']:8.0f} requests/s   p50 {r['p50_ms']:6.2f} ms   "
                  f"p99 {r['p99_ms']:6.2f} ms   ({r['requests']} requests in {args.rounds} x {args.seconds} s, "
                  f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']})")
        if args.single:
            ratio = figures["charges_payments"]["rps"] / figures["charges_baseline"]["rps"]
            figures["charges_ratio"] = round(ratio, 4)
            print(f"single charges: payments/baseline {ratio:.1%}")
        stop(servers["baseline"][1])

        # ---- bulk intake over HTTP, then the same lines by raw SQL (COPY) on the same database
        bulk_path = await bulk(servers["payments"][0], args, figures, dsn) if args.json_bulk else "/charges/bulk"
        ok &= figures.get("bulk_accepted", 0) == figures.get("bulk_lines", 0)
        if bulk_path is not None and args.csv_lines:
            await csv_stream(servers["payments"][0], servers["payments"][1].pid, args, figures, dsn)
            ok &= figures.get("csv_accepted") == args.csv_lines
        stop(servers["payments"][1])
        for _base, _proc, log in servers.values():
            log.unlink(missing_ok=True)
        if bulk_path is None:
            print("bulk intake: POST /charges/bulk not there (404): not measured")
        else:
            raw_rate = await raw_bulk(dsn, args)
            figures.update(bulk_raw_rate=round(raw_rate), bulk_raw_lines=raw_lines(args))
            print(f"bulk, raw SQL:  {raw_lines(args)} lines = {raw_rate:,.0f} lines/s "
                  f"(chunks of {RAW_BULK_CHUNK}: vouchers locked, charges, ledger and outbox rows by COPY)")
            if "bulk_rate" in figures:
                figures["bulk_ratio"] = round(figures["bulk_rate"] / raw_rate, 4)
                print(f"bulk intake (JSON): payments/raw {figures['bulk_ratio']:.1%}")
            if "csv_rate" in figures:
                figures["csv_ratio"] = round(figures["csv_rate"] / raw_rate, 4)
                print(f"bulk intake (CSV file of {args.csv_lines} lines, streamed): payments/raw COPY of "
                      f"{raw_lines(args)} lines {figures['csv_ratio']:.2f}; worker memory at most "
                      f"{figures['csv_rss_peak_mib']:.0f} MiB ({figures['csv_rss_before_mib']:.0f} before)")

        # ---- 2. a settlement run
        ok &= await settlement(dsn, url, args, figures)
        print(json.dumps(figures))
        return 0 if ok else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop(proc)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        try:
            await delete_namespace(AMQP_URL, namespace, [f"{namespace}.sink", f"{namespace}.payments"])
        except Exception as exc:  # noqa: BLE001
            print(f"could not delete bus namespace {namespace}: {exc}", file=sys.stderr)


async def settlement(dsn: str, url: str, args: argparse.Namespace, figures: dict) -> bool:
    """A settlement run of ``--charges`` beside the raw SQL doing the same work, for each ``--settled-events``."""
    ok, n = True, args.charges
    for events in args.settled_events.split(","):
        t0 = time.perf_counter()
        await seed_charges(dsn, n, args.settle_providers, args.vouchers)
        print(f"seeded {n} accepted charges ({args.settle_providers} providers) in {time.perf_counter() - t0:.1f} s")
        elapsed, made, check = await service_settlement(url, events, args.settled_event_charges)
        ok &= check["ok"]
        what = f"SETTLED_EVENTS={events}, SETTLED_EVENT_CHARGES={args.settled_event_charges}"
        print(f"settlement ({what}), payments: {n} charges into {made} settlements in {elapsed:.2f} s = "
              f"{n / elapsed:,.0f} charges/s; ledger check ok: {check['ok']}")
        await seed_charges(dsn, n, args.settle_providers, args.vouchers)
        raw = await raw_settlement(dsn, events, args.settled_event_charges)
        print(f"settlement ({what}), raw SQL:  {n} charges in {raw:.2f} s = {n / raw:,.0f} charges/s")
        key = "settle" if events == args.settled_events.split(",")[0] else f"settle_{events}"
        figures.update({"settle_charges": n, "settle_providers": args.settle_providers,
                        f"{key}_events": events, f"{key}_seconds": round(elapsed, 3), f"{key}_rate": round(n / elapsed),
                        f"{key}_raw_seconds": round(raw, 3), f"{key}_raw_rate": round(n / raw),
                        f"{key}_ratio": round(raw / elapsed, 4), "ledger_check_ok": ok})
        print(f"settlement ({what}): payments/raw {raw / elapsed:.1%}")
    return ok


async def bulk(base: str, args: argparse.Namespace, figures: dict, dsn: str) -> str | None:
    """Bulk intake: ``--bulk-requests`` requests of ``--bulk-lines`` lines each, one after another; lines/s
    until the last answer, and until the relay has published the last ``ChargeAccepted``."""
    from seteli_shared.auth import mint

    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        probe = await c.post("/charges/bulk", json=[], headers={
            "Authorization": f"Bearer {mint('bench:p0', ['provider_charger'], provider_id='p0')}"})
        if probe.status_code in (404, 405):
            return None
        headers = {"Authorization": f"Bearer {mint('bench:p0', ['provider_charger'], provider_id='p0')}"}
        vouchers = [f"v{i}" for i in range(0, args.vouchers, args.providers)]  # p0's
        lines, t0 = 0, time.perf_counter()
        accepted = 0
        for r in range(args.bulk_requests):
            body = [{"voucher_id": vouchers[(r * args.bulk_lines + i) % len(vouchers)],
                     "provider_reference": f"bulk-{r}-{i}", "service_date": SERVICE_DAY, "units": "0.01"}
                    for i in range(args.bulk_lines)]
            answer = await c.post("/charges/bulk", json=body, headers=headers)
            if answer.status_code != 200:
                print(f"bulk: {answer.status_code} {answer.text[:300]}", file=sys.stderr)
                figures["bulk_error"] = answer.status_code
                return "/charges/bulk"
            accepted += answer.json().get("accepted", 0)
            lines += args.bulk_lines
        elapsed = time.perf_counter() - t0
    await outbox_drained(dsn)
    published = time.perf_counter() - t0
    figures.update(bulk_lines=lines, bulk_accepted=accepted, bulk_rate=round(lines / elapsed),
                   bulk_published_rate=round(lines / published))
    print(f"bulk intake: {lines} lines ({accepted} accepted) in {elapsed:.2f} s = {lines / elapsed:,.0f} lines/s "
          f"({args.bulk_lines} lines per request); every event published after {published:.2f} s = "
          f"{lines / published:,.0f} lines/s")
    return "/charges/bulk"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def csv_stream(base: str, pid: int, args: argparse.Namespace, figures: dict, dsn: str) -> None:
    """One month-end CSV file of ``--csv-lines`` lines (semicolons, decimal commas, Finnish dates), sent in
    64 KiB pieces as it is generated, as one request: lines/s until the answer, and the payments worker's
    resident memory (sampled every 20 ms) before and at its highest, beside the file's size."""
    from seteli_shared.auth import mint

    headers = {"Authorization": f"Bearer {mint('bench:p1', ['provider_billing_system'], provider_id='p1')}",
               "content-type": "text/csv"}
    vouchers = [f"v{i}" for i in range(1, args.vouchers, args.providers)]  # p1's
    day = date.fromisoformat(SERVICE_DAY)
    size = [0]

    async def body():  # noqa: ANN202
        part = ["voucher_id;provider_reference;service_date;units;unit_price\n"]
        for i in range(args.csv_lines):
            part.append(f"{vouchers[i % len(vouchers)]};csv-{i};{day.day}.{day.month}.{day.year};0,01;25,00\n")
            if len(part) >= 1500:  # about 64 KiB
                data = "".join(part).encode()
                size[0] += len(data)
                yield data
                part = []
        data = "".join(part).encode()
        size[0] += len(data)
        yield data

    peak, sampling = [_rss_mib(pid)], True
    before = peak[0]

    async def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], _rss_mib(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    async with httpx.AsyncClient(base_url=base, timeout=1800) as c:
        t0 = time.perf_counter()
        answer = await c.post("/charges/bulk", content=body(), headers=headers)
        elapsed = time.perf_counter() - t0
    sampling = False
    await sampler
    if answer.status_code != 200:
        print(f"csv: {answer.status_code} {answer.text[:300]}", file=sys.stderr)
        figures["csv_error"] = answer.status_code
        return
    got = answer.json()
    await outbox_drained(dsn)
    published = time.perf_counter() - t0
    figures.update(csv_lines=args.csv_lines, csv_accepted=got["accepted"], csv_rate=round(args.csv_lines / elapsed),
                   csv_published_rate=round(args.csv_lines / published), csv_file_mib=round(size[0] / 2**20, 1),
                   csv_rss_before_mib=round(before, 1), csv_rss_peak_mib=round(peak[0], 1),
                   csv_answer_mib=round(len(answer.content) / 2**20, 1))
    print(f"bulk CSV, streamed: {args.csv_lines} lines ({got['accepted']} accepted) in one request of "
          f"{size[0] / 2**20:.1f} MiB, {elapsed:.2f} s = {args.csv_lines / elapsed:,.0f} lines/s; every event "
          f"published after {published:.2f} s; worker memory {before:.0f} MiB before, {peak[0]:.0f} MiB at most "
          f"(the answer: {len(answer.content) / 2**20:.1f} MiB of JSON)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per server and round")
    p.add_argument("--rounds", type=int, default=3, help="wrk runs per server, alternated between the two")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--providers", type=int, default=50, help="approved providers (each its token in the script)")
    p.add_argument("--vouchers", type=int, default=5000, help="vouchers the charges spread over")
    p.add_argument("--charges", type=int, default=200_000, help="accepted charges in the settlement run")
    p.add_argument("--settle-providers", type=int, default=50, help="providers the settled charges belong to")
    p.add_argument("--settled-events", default="v2",
                   help="payments' SETTLED_EVENTS for the run (v2, v1 or both; several, comma-separated, one run each)")
    p.add_argument("--settled-event-charges", type=int, default=1000, help="payments' SETTLED_EVENT_CHARGES")
    p.add_argument("--accepted-events", default="v2", choices=("v1", "v2", "both"),
                   help="payments' ACCEPTED_EVENTS for the bulk intake; the raw bulk baseline writes the same kind of "
                        "outbox rows (v1 one a charge, v2 one per funder and chunk of --accepted-event-charges)")
    p.add_argument("--accepted-event-charges", type=int, default=1000, help="payments' ACCEPTED_EVENT_CHARGES")
    p.add_argument("--settlement-only", action="store_true", help="only the settlement run and its baseline")
    p.add_argument("--bulk-lines", type=int, default=10000)
    p.add_argument("--bulk-requests", type=int, default=5)
    p.add_argument("--csv-lines", type=int, default=100_000, help="lines of the streamed CSV file (0: skip)")
    p.add_argument("--log-level", default="info", help="the payments app's LOG_LEVEL (info logs every request)")
    p.add_argument("--relay", default="in_process", choices=("in_process", "process"),
                   help="the payments app's RELAY: its outbox relay in the worker's event loop or as its child process")
    p.add_argument("--no-single", dest="single", action="store_false",
                   help="skip the single charges (bench/system_charges.py measures them with the whole system)")
    p.add_argument("--no-json-bulk", dest="json_bulk", action="store_false", help="skip the JSON bulk requests")
    p.add_argument("--raw-bulk-lines", type=int, default=0,
                   help="lines of the raw COPY baseline (default: as many as the JSON bulk sends)")
    p.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline:
        import uvicorn

        uvicorn.run(baseline_app(args.dsn), host="127.0.0.1", port=args.serve_baseline, log_level="warning",
                    access_log=False)
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
