"""The ledger's invariants on a live PostgreSQL database (``seteli-payments ledger-check`` and
``GET /ledger/check``), that they catch a row changed behind the service's back, and that a settlement
run killed in the middle (SIGKILL of a real ``seteli-payments serve`` process) and run again settles
every charge exactly once."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

import payments.app
from payments.charging import domain, engine, intake
from payments.ledger.check import ledger_check
from payments.settlement import runs
from payments.settlement.domain import PayoutRules
from payments.settings import PaymentsSettings
from seteli_shared.auth import Principal, Role
from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.db import make_engine, session_factory, unit_of_work, upgrade_async
from seteli_shared.testing import make_settings

from ..serving import start_payments

BIN = Path(sys.executable).parent
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
CLOCK = FixedClock(datetime(2026, 6, 20, 12, 0, tzinfo=timezone.utc))


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def seed(url: str, charges: int, providers: int = 50, vouchers: int = 1000, fee_rate: str = "0.05") -> None:
    """Projections and ``charges`` accepted charges with their ledger transactions, by raw SQL: funder
    091, ``providers`` approved providers, ``vouchers`` vouchers (100 h each for the validity)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO payments_funder (funder_id, operator_fee_rate) VALUES ('091', $1)",
                               fee_rate)
            await conn.execute("""
                INSERT INTO payments_approval (funder_id, provider_id, category, approved_at, approval_id, status)
                SELECT '091', 'p' || i, 'home_care', now(), 'a' || i, 'approved' FROM generate_series(0, $1 - 1) i""",
                               providers)
            await conn.execute("""
                INSERT INTO payments_voucher (voucher_id, funder_id, category, issued, units_per_period_x100, period,
                    value_per_unit_cents, valid_from, valid_until, provider_id, carry_over, version, kind)
                SELECT 'v' || i, '091', 'home_care', true, 10000, 'validity', 2500, '2026-01-01', '2026-12-31',
                    'p' || (i % $2), false, 0, 'service_voucher' FROM generate_series(0, $1 - 1) i""",
                               vouchers, providers)
            await conn.execute("""
                INSERT INTO payments_charge (id, voucher_id, funder_id, provider_id, category, provider_reference,
                    service_date, units_x100, unit_price_cents, amount_cents, own_share_cents, price_registered,
                    status, accepted_at)
                SELECT 'c' || i, 'v' || (i % $2), '091', 'p' || ((i % $2) % $3), 'home_care', 'r' || i,
                    DATE '2026-06-01' + (i % 10), 100, 2500 + (i % 7), 2500 + (i % 7), 0, false, 'accepted',
                    now() - interval '1 hour' + i * interval '1 millisecond'
                FROM generate_series(0, $1 - 1) i""", charges, vouchers, providers)
            await conn.execute("""
                INSERT INTO payments_ledger_transaction (id, kind, reference, created_at)
                SELECT 't' || id, 'charge', id, accepted_at FROM payments_charge""")
            await conn.execute("""
                INSERT INTO payments_ledger_entry (transaction_id, account, amount_cents)
                SELECT 't' || id, 'funder:' || funder_id || ':voucher_spend', amount_cents FROM payments_charge
                UNION ALL
                SELECT 't' || id, 'provider:' || provider_id || ':payable', -amount_cents FROM payments_charge""")
    finally:
        await conn.close()


async def check(url: str) -> dict:
    engine = make_engine(url)
    try:
        async with session_factory(engine)() as session:
            return await ledger_check(session)
    finally:
        await engine.dispose()


def ledger_check_command(url: str) -> tuple[int, dict]:
    env = dict(os.environ, DATABASE_URL=url, ENVIRONMENT="test", LOG_LEVEL="WARNING")
    done = subprocess.run([str(BIN / "seteli-payments"), "ledger-check"], env=env, capture_output=True, text=True,
                          timeout=120)
    out = done.stdout
    return done.returncode, json.loads(out[out.index("{"):])


async def superuser(url: str, sql: str) -> None:
    """A change behind the service's back (as the superuser, with triggers and rules off)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def database(pg):  # noqa: ANN001
    url = await pg.create("payments")
    await upgrade_async(payments.app.SPEC.migrations_dir, url)
    return url


async def test_the_invariants_hold_after_charges_and_a_settlement_and_fail_on_a_tampered_row(
        database, amqp_url, namespace):  # noqa: ANN001
    url = database
    await seed(url, charges=300, providers=5, vouchers=40)
    # and charges through the use case itself (the single-charge path), to the voucher's last unit
    db = make_engine(url)
    sessions = session_factory(db)
    charger = Principal("t:provider_charger", frozenset({Role.PROVIDER_CHARGER}), provider_id="p0")
    try:
        for n in range(3):
            req = domain.ChargeRequest("p0", date(2026, 6, 15), 9000 if n == 2 else 100, None)
            charge, new = await intake.charge_voucher(sessions, CLOCK, charger, engine.Line(0, "v0", None, f"own-{n}",
                                                                                             req))
            assert new
        with pytest.raises(Exception) as refused:  # the voucher is used up
            await intake.charge_voucher(sessions, CLOCK, charger, engine.Line(0, "v0", None, "own-x", domain.ChargeRequest(
                "p0", date(2026, 6, 15), 1, None)))
        assert getattr(refused.value, "reason", None) == "units_exceeded"
        async with unit_of_work(sessions) as session:
            made = (await runs.settle(session, CLOCK, Decimal("0.05"), PayoutRules(), hold_back=False)).settlements
        assert sum(s.charge_count for s in made) == 303
    finally:
        await db.dispose()

    result = await check(url)
    assert result["ok"], result
    code, out = ledger_check_command(url)
    assert code == 0 and out["ok"], out

    # over HTTP too
    app = payments.app.create_app(make_settings(PaymentsSettings, database_url=url, amqp_url=amqp_url,
                                                bus_namespace=namespace, migrate_on_start=False))

    async def http_check() -> dict:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.get("/ledger/check", headers=OPERATOR)
        assert r.status_code == 200, r.text
        return r.json()

    answer = await http_check()
    assert answer["ok"] and answer["checks"]["no_voucher_beyond_entitlement"], answer

    # one ledger entry changed by a cent: the entries no longer sum to zero, its transaction is unbalanced
    await superuser(url, "UPDATE payments_ledger_entry SET amount_cents = amount_cents + 1 "
                         "WHERE id = (SELECT min(id) FROM payments_ledger_entry)")
    code, out = ledger_check_command(url)
    assert code == 1 and not out["checks"]["entries_sum_to_zero"] and not out["checks"]["every_transaction_balanced"]
    await superuser(url, "UPDATE payments_ledger_entry SET amount_cents = amount_cents - 1 "
                         "WHERE id = (SELECT min(id) FROM payments_ledger_entry)")
    assert (await check(url))["ok"]

    # a charge's units raised beyond the voucher's entitlement for its period
    await superuser(url, "UPDATE payments_charge SET units_x100 = units_x100 + 1 WHERE provider_reference = 'own-0'")
    code, out = ledger_check_command(url)
    assert code == 1 and not out["checks"]["no_voucher_beyond_entitlement"], out
    assert out["vouchers_over_entitlement"][0]["voucher_id"] == "v0"
    assert out["checks"]["entries_sum_to_zero"]  # the others still hold
    await superuser(url, "UPDATE payments_charge SET units_x100 = units_x100 - 1 WHERE provider_reference = 'own-0'")

    # a settled charge's fee changed: settled no longer equals the charges minus their fees
    await superuser(url, "UPDATE payments_charge SET fee_cents = fee_cents + 1, net_cents = net_cents - 1 "
                         "WHERE id = 'c1'")
    code, out = ledger_check_command(url)
    assert code == 1 and not out["checks"]["settled_equals_charges_minus_fees"], out
    answer = await http_check()
    assert not answer["ok"] and not answer["checks"]["settled_equals_charges_minus_fees"], answer


def _start(url: str, amqp_url: str, namespace: str, log: Path) -> tuple[subprocess.Popen, str]:
    return start_payments(url, amqp_url, namespace, log, SETTLED_EVENT_CHARGES="4")


async def _settlement_in_progress(url: str) -> bool:
    """Whether a backend is inside the settlement run's transaction (it has written rows not committed)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'payments_settlement' AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def test_a_settlement_run_killed_in_the_middle_and_run_again_settles_every_charge_once(
        database, amqp_url, namespace, tmp_path):  # noqa: ANN001
    url, n = database, 4000
    await seed(url, charges=n, providers=400, vouchers=2000)
    log = tmp_path / "payments.log"
    proc, base = _start(url, amqp_url, namespace, log)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            run = asyncio.create_task(client.post("/settlements/run", headers=OPERATOR))
            deadline = time.monotonic() + 30
            while not await _settlement_in_progress(url):
                assert not run.done(), f"the run ended before it was caught in the middle: {run.result().text}"
                assert time.monotonic() < deadline, "the settlement run never started"
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGKILL)  # in the middle of the run's transaction
            proc.wait(10)
            with pytest.raises(httpx.HTTPError):
                await run
        conn = await asyncpg.connect(_dsn(url))
        try:  # nothing of the killed run is left: it was one transaction
            assert await conn.fetchval("SELECT count(*) FROM payments_settlement") == 0
            assert await conn.fetchval("SELECT count(*) FROM payments_charge WHERE status = 'accepted'") == n
        finally:
            await conn.close()

        proc, base = _start(url, amqp_url, namespace, log)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            r = await client.post("/settlements/run", headers=OPERATOR)
            assert r.status_code == 200, r.text
            r2 = await client.post("/settlements/run", headers=OPERATOR)  # nothing is left to settle
            assert r2.status_code == 200 and r2.json() == [], r2.text
            check_http = (await client.get("/ledger/check", headers=OPERATOR)).json()
        assert check_http["ok"], check_http
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    conn = await asyncpg.connect(_dsn(url))
    try:
        # every charge settled exactly once, into a settlement that exists
        assert await conn.fetchval("SELECT count(*) FROM payments_charge WHERE status = 'settled' "
                                   "AND settlement_id IN (SELECT id FROM payments_settlement)") == n
        # no settlement duplicated: one per provider and funder, its figures its charges'
        dup = await conn.fetchval("SELECT count(*) FROM (SELECT funder_id, provider_id FROM payments_settlement "
                                  "GROUP BY funder_id, provider_id HAVING count(*) > 1) d")
        assert dup == 0
        assert await conn.fetchval("SELECT count(*) FROM payments_settlement") == 400
        assert await conn.fetchval("SELECT sum(charge_count) FROM payments_settlement") == n
        assert await conn.fetchval("SELECT count(*) FROM payments_ledger_transaction WHERE kind = 'settlement'") == 400
        # the outbox lists each charge once in a ChargesSettled (v2, the default), at most 4 an event
        # (SETTLED_EVENT_CHARGES): each settlement of 10 charges in 3 events; no v1 event
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'charge.settled.v1'") == 0
        events = [json.loads(b["body"])["data"] for b in
                  await conn.fetch("SELECT body FROM outbox WHERE routing_key = 'charge.settled.v2'")]
        charge_ids = [c["charge_id"] for e in events for c in e["charges"]]
        assert len(charge_ids) == n and len(set(charge_ids)) == n
        assert len(events) == 400 * 3 and max(len(e["charges"]) for e in events) == 4
        gross = {r["id"]: r["gross_cents"] for r in await conn.fetch("SELECT id, gross_cents FROM payments_settlement")}
        listed: dict[str, int] = {}
        for e in events:
            listed[e["settlement_id"]] = listed.get(e["settlement_id"], 0) + sum(c["gross_cents"] for c in e["charges"])
        assert listed == gross
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key LIKE 'settlement.created%'") == 400
    finally:
        await conn.close()
    code, out = ledger_check_command(url)
    assert code == 0 and out["ok"], out


@pytest.mark.parametrize("events", ["v1", "v2", "both"])
async def test_a_settlement_announces_its_charges_as_the_setting_says(database, events):  # noqa: ANN001
    """SETTLED_EVENTS: v1 one ChargeSettled a charge, v2 one ChargesSettled per settlement in chunks of at most
    SETTLED_EVENT_CHARGES, both each; whatever the setting, each charge with its settlement's figures."""
    url, n = database, 250
    await seed(url, charges=n, providers=2, vouchers=40)
    db = make_engine(url)
    try:
        async with unit_of_work(session_factory(db)) as session:
            made = (await runs.settle(session, CLOCK, Decimal("0.05"), PayoutRules(), hold_back=False,
                                      settled_events=events, settled_event_charges=100)).settlements
    finally:
        await db.dispose()
    assert sorted(s.charge_count for s in made) == [125, 125]
    conn = await asyncpg.connect(_dsn(url))
    try:
        rows = {r["id"]: r for r in await conn.fetch("SELECT id, settlement_id, amount_cents, fee_cents, net_cents "
                                                     "FROM payments_charge")}
        v1 = [json.loads(r["body"])["data"] for r in
              await conn.fetch("SELECT body FROM outbox WHERE routing_key = 'charge.settled.v1'")]
        v2 = [json.loads(r["body"])["data"] for r in
              await conn.fetch("SELECT body FROM outbox WHERE routing_key = 'charge.settled.v2'")]
    finally:
        await conn.close()
    assert len(v1) == (n if events in ("v1", "both") else 0)
    assert len(v2) == (2 * 2 if events in ("v2", "both") else 0)  # 125 charges: 100 + 25
    for e in v1:
        r = rows[e["charge_id"]]
        assert (e["settlement_id"], e["gross_cents"], e["fee_cents"], e["net_cents"]) == (
            r["settlement_id"], r["amount_cents"], r["fee_cents"], r["net_cents"])
    listed = [(e["settlement_id"], c) for e in v2 for c in e["charges"]]
    assert len({c["charge_id"] for _, c in listed}) == len(listed) == (n if v2 else 0)
    assert sorted(len(e["charges"]) for e in v2) == ([25, 25, 100, 100] if v2 else [])
    for sid, c in listed:
        r = rows[c["charge_id"]]
        assert (sid, c["gross_cents"], c["fee_cents"], c["net_cents"]) == (
            r["settlement_id"], r["amount_cents"], r["fee_cents"], r["net_cents"])


@pytest.mark.parametrize("zero_group, in_numeric", [(False, False), (True, False), (False, True)])
async def test_a_runs_fees_are_the_spread_and_its_v2_bodies_the_ordinary_envelopes(
        database, zero_group, in_numeric, monkeypatch):  # noqa: ANN001
    """The set-based run (v2: fees spread and events written by the database) gives each charge the fee
    ``figures.settle`` spreads over its settlement's charges in (accepted_at, id) order (ties in both the
    remainders and the acceptance times), and each ``charge.settled.v2`` body is the JSON pydantic makes of the
    envelope, its charges in order. A group of charges of 0 cents (no whole-number spread) settles its run the
    way that reads the charges into Python, with the same outcome; so does the spread in ``numeric`` (where fee x
    amount could pass a ``bigint``)."""
    from payments.settlement import batch as settle_batch, figures
    from seteli_shared.events import Envelope

    url, n, per_event = database, 700, 40
    await seed(url, charges=n, providers=3, vouchers=60, fee_rate="0.0333")
    conn = await asyncpg.connect(_dsn(url))
    try:  # many charges accepted in the same second (their order then their ids': 'c10' before 'c2'), the
        # seconds in another order than the ids
        await conn.execute("UPDATE payments_charge SET accepted_at = date_trunc('second', accepted_at) "
                           "- (substr(id, 2)::int % 50) * interval '1 second'")
        if zero_group:
            await conn.execute("UPDATE payments_charge SET provider_id = 'p-zero', amount_cents = 0 "
                               "WHERE id IN ('c0', 'c3', 'c6')")
    finally:
        await conn.close()
    if in_numeric:
        monkeypatch.setattr(settle_batch, "_MAX_BIGINT", 0)
    used = []
    original = settle_batch.SettlementBatch.__aexit__

    async def noted(self, *exc):  # noqa: ANN001, ANN002, ANN202
        used.append(self.whole_set)
        return await original(self, *exc)

    settle_batch.SettlementBatch.__aexit__ = noted
    db = make_engine(url)
    try:
        async with unit_of_work(session_factory(db)) as session:
            made = (await runs.settle(session, CLOCK, Decimal("0.05"), PayoutRules(), hold_back=False,
                                      settled_event_charges=per_event)).settlements
    finally:
        settle_batch.SettlementBatch.__aexit__ = original
        await db.dispose()
    assert used == [not zero_group]
    assert sum(s.charge_count for s in made) == n
    conn = await asyncpg.connect(_dsn(url))
    try:
        charges = await conn.fetch("SELECT id, voucher_id, category, settlement_id, amount_cents, fee_cents, net_cents "
                                   "FROM payments_charge ORDER BY settlement_id, accepted_at, id")
        bodies = [r["body"] for r in await conn.fetch(
            "SELECT body FROM outbox WHERE routing_key = 'charge.settled.v2' ORDER BY body")]
    finally:
        await conn.close()
    by_settlement: dict[str, list] = {}
    for c in charges:
        by_settlement.setdefault(c["settlement_id"], []).append(c)
    for s in made:
        mine = by_settlement[s.id]
        expected = figures.settle([c["amount_cents"] for c in mine], Decimal("0.0333"))
        assert [c["fee_cents"] for c in mine] == expected.charge_fees
        assert s.fee_cents == expected.fee_cents == sum(c["fee_cents"] for c in mine)
        assert all(c["net_cents"] == c["amount_cents"] - c["fee_cents"] for c in mine)
    listed: dict[str, list] = {}
    for body in bodies:
        env = Envelope.model_validate_json(body)
        assert env.model_dump_json() == body, "the body is the JSON pydantic makes of its envelope"
        event = env.event()
        assert 1 <= len(event.charges) <= per_event
        listed.setdefault(event.settlement_id, []).append(event.charges)
    for sid, chunks in listed.items():
        chunks.sort(key=lambda ch: [c["id"] for c in by_settlement[sid]].index(ch[0].charge_id))
        got = [(c.charge_id, c.voucher_id, c.category, c.gross_cents, c.fee_cents, c.net_cents)
               for ch in chunks for c in ch]
        assert got == [(c["id"], c["voucher_id"], c["category"], c["amount_cents"], c["fee_cents"], c["net_cents"])
                       for c in by_settlement[sid]]
    assert set(listed) == {s.id for s in made}


async def _more_charges(url: str, prefix: str, charges: int, vouchers: int, providers: int) -> None:
    """``charges`` more accepted charges (ids ``prefix`` + n) with their ledger transactions, by raw SQL."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            await conn.execute("""
                INSERT INTO payments_charge (id, voucher_id, funder_id, provider_id, category, provider_reference,
                    service_date, units_x100, unit_price_cents, amount_cents, own_share_cents, price_registered,
                    status, accepted_at)
                SELECT $4 || i, 'v' || (i % $2), '091', 'p' || ((i % $2) % $3), 'home_care', $4 || 'r' || i,
                    DATE '2026-06-11' + (i % 5), 100, 2500, 2500, 0, false, 'accepted',
                    now() - interval '1 hour' + i * interval '1 millisecond'
                FROM generate_series(0, $1 - 1) i""", charges, vouchers, providers, prefix)
            await conn.execute("""
                INSERT INTO payments_ledger_transaction (id, kind, reference, created_at)
                SELECT 't' || id, 'charge', id, accepted_at FROM payments_charge WHERE id LIKE $1 || '%'""", prefix)
            await conn.execute("""
                INSERT INTO payments_ledger_entry (transaction_id, account, amount_cents)
                SELECT 't' || id, 'funder:' || funder_id || ':voucher_spend', amount_cents FROM payments_charge
                WHERE id LIKE $1 || '%'
                UNION ALL
                SELECT 't' || id, 'provider:' || provider_id || ':payable', -amount_cents FROM payments_charge
                WHERE id LIKE $1 || '%'""", prefix)
    finally:
        await conn.close()


async def test_a_run_offsetting_corrections_killed_in_the_middle_offsets_each_once_after_restart(
        database, amqp_url, namespace, tmp_path):  # noqa: ANN001
    """Settled charges corrected (200 reversals, 100 partial), new charges accepted; the run that offsets
    the corrections against the new payouts is killed (SIGKILL) inside its transaction: nothing of it stays,
    every correction still waits. After a restart one run offsets each correction exactly once, the next
    finds nothing, and the invariants hold."""
    from payments.charging import corrections
    from seteli_shared.uow import SessionUnitOfWork

    url, n = database, 4000
    await seed(url, charges=n, providers=400, vouchers=2000)
    engine = make_engine(url)
    sessions = session_factory(engine)
    operator = Principal("t:operator", frozenset({Role.OPERATOR}))
    try:
        async with unit_of_work(sessions) as session:
            assert len((await runs.settle(session, CLOCK, Decimal("0.05"), PayoutRules(),
                                          hold_back=False)).settlements) == 400
        for i in range(300):
            await corrections.correct_charge(SessionUnitOfWork(sessions), CLOCK, operator, f"c{i}", reason="wrong_units",
                                             reversal=i < 200, units_x100=None if i < 200 else 50)
    finally:
        await engine.dispose()
    await _more_charges(url, "d", n, vouchers=2000, providers=400)
    assert (await check(url))["ok"]
    log = tmp_path / "payments.log"
    proc, base = _start(url, amqp_url, namespace, log)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            run = asyncio.create_task(client.post("/settlements/run", headers=OPERATOR))
            deadline = time.monotonic() + 30
            while not await _settlement_in_progress(url):
                assert not run.done(), f"the run ended before it was caught in the middle: {run.result().text}"
                assert time.monotonic() < deadline, "the settlement run never started"
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            with pytest.raises(httpx.HTTPError):
                await run
        conn = await asyncpg.connect(_dsn(url))
        try:  # nothing of the killed run is left, every correction still waits
            assert await conn.fetchval("SELECT count(*) FROM payments_settlement") == 400
            assert await conn.fetchval(
                "SELECT count(*) FROM payments_charge_correction WHERE offset_settlement_id IS NULL") == 300
        finally:
            await conn.close()

        proc, base = _start(url, amqp_url, namespace, log)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            r = await client.post("/settlements/run", headers=OPERATOR)
            assert r.status_code == 200, r.text
            assert sum(s["net_cents"] for s in r.json()) == sum(s["gross_cents"] - s["fee_cents"] for s in r.json())
            r2 = await client.post("/settlements/run", headers=OPERATOR)
            assert r2.status_code == 200 and r2.json() == [], r2.text
            check_http = (await client.get("/ledger/check", headers=OPERATOR)).json()
        assert check_http["ok"], check_http
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    conn = await asyncpg.connect(_dsn(url))
    try:
        # each correction offset once, by a settlement of the second round that exists, of its provider
        assert await conn.fetchval(
            "SELECT count(*) FROM payments_charge_correction k JOIN payments_settlement s "
            "ON s.id = k.offset_settlement_id AND s.provider_id = k.provider_id AND s.created_at >= "
            "(SELECT max(created_at) FROM payments_settlement)") == 300
        assert await conn.fetchval("SELECT count(*) FROM payments_settlement") == 800
        assert await conn.fetchval("SELECT sum(correction_count) FROM payments_settlement") == 300
        assert await conn.fetchval("SELECT count(*) FROM payments_settlement WHERE net_cents < 0") == 0
        # the second round paid the new charges less the corrections: 4000 x 25.00, less what was corrected
        corrected = await conn.fetchval("SELECT sum(amount_cents) FROM payments_charge_correction")
        assert await conn.fetchval("SELECT sum(gross_cents) FROM payments_settlement WHERE correction_count > 0 "
                                   "OR id IN (SELECT settlement_id FROM payments_charge WHERE id LIKE 'd%')") == (
            n * 2500 - corrected)
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'charge.corrected.v1'") == 300
    finally:
        await conn.close()
    code, out = ledger_check_command(url)
    assert code == 0 and out["ok"], out
