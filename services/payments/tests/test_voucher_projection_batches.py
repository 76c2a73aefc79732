"""Payments' voucher projection folded a run of ``VoucherIssued`` at a time (``on_vouchers_issued``, the consumer's
batch handler) leaves the same rows as the events folded one at a time: with choices and amendments before or
after the issue, a voucher issued twice (a redelivery, or a later event with other terms), codes given or not,
across batches and inside one, on PostgreSQL and SQLite. So does each run of issues announced as ``VouchersIssued``
(``voucher.issued.v2``, one event per funder's stretch of the run, as the vouchers service writes a decision run's),
folded once or delivered twice."""
from __future__ import annotations

import asyncio
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import payments.app
from payments.projections.handlers import BATCH_HANDLERS, HANDLERS
from seteli_shared.db import make_engine, session_factory, upgrade
from seteli_shared.events import (Envelope, Event, IssuedVoucher, VoucherAmended, VoucherIssued, VoucherProviderChosen,
                                  VouchersIssued)

MIGRATIONS = Path(payments.app.__file__).parent / "migrations"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)


def issued(v: str, units: str = "10", code: str | None = None, kind: str | None = None, value: int = 2500,
           until: date = date(2026, 12, 31), funder: str = "091") -> VoucherIssued:
    extra = {"budget_cents": 100_000, "categories": ["home_care", "cleaning"]} if kind == "personal_budget" else {}
    return VoucherIssued(voucher_id=v, funder_id=funder, client_ref="ref-x", decision_ref=f"d-{v}", category="home_care",
                         unit="hour", units_per_period=Decimal(units), period="month", value_per_unit_cents=value,
                         valid_from=date(2026, 6, 1), valid_until=until, issued_at=T0, kind=kind, voucher_code=code,
                         carry_over=units == "7.5", **extra)


def chosen(v: str, provider: str, minutes: int) -> VoucherProviderChosen:
    return VoucherProviderChosen(voucher_id=v, funder_id="091", provider_id=provider, category="home_care",
                                 chosen_at=T0 + timedelta(minutes=minutes))


def amended(v: str, version: int, units: str) -> VoucherAmended:
    return VoucherAmended(voucher_id=v, funder_id="091", decision_ref=f"d-{v}", decision_version=version,
                          category="home_care", units_per_period=Decimal(units), period="month",
                          value_per_unit_cents=3000 + version, valid_from=date(2026, 6, 1),
                          valid_until=date(2027, 6, 30), amended_at=T0 + timedelta(days=version), carry_over=True)


def as_v2(batch: list[Event]) -> list[Event]:
    """The batch with each stretch of one funder's ``VoucherIssued`` as one ``VouchersIssued`` listing them in order."""
    out: list[Event] = []
    for e in batch:
        if not isinstance(e, VoucherIssued):
            out.append(e)
            continue
        listed = IssuedVoucher(**{k: v for k, v in e.model_dump().items() if k != "funder_id"})
        if out and isinstance(out[-1], VouchersIssued) and out[-1].funder_id == e.funder_id:
            out[-1] = VouchersIssued(funder_id=e.funder_id, vouchers=[*out[-1].vouchers, listed])
        else:
            out.append(VouchersIssued(funder_id=e.funder_id, vouchers=[listed]))
    return out


async def _fold(sessions, batches: list[list[Event]], at_once: bool | str) -> None:  # noqa: ANN001
    """Each batch in one transaction, as the consumer does: runs of one type to its batch handler (at_once),
    else every event to its own handler; ``"v2"``: the issues as ``VouchersIssued`` (``as_v2``), at once."""
    if at_once == "v2":
        batches = [as_v2(batch) for batch in batches]
    for batch in batches:
        async with sessions() as session:
            async with session.begin():
                i = 0
                while i < len(batch):
                    j = i + 1
                    while j < len(batch) and type(batch[j]) is type(batch[i]):
                        j += 1
                    items = [(Envelope.wrap(e, "vouchers"), e) for e in batch[i:j]]
                    run = BATCH_HANDLERS.get(batch[i].event_type()) if at_once else None
                    if run is not None:
                        await run(session, items)
                    else:
                        for env, e in items:
                            await HANDLERS[e.event_type()](session, env, e)
                    i = j


async def _rows(engine) -> dict:  # noqa: ANN001
    async with engine.connect() as conn:
        vouchers = [dict(r) for r in (await conn.execute(sa.text(
            "SELECT * FROM payments_voucher ORDER BY voucher_id"))).mappings()]
        choices = [tuple(r) for r in (await conn.execute(sa.text(
            "SELECT voucher_id, provider_id, effective_from FROM payments_provider_choice "
            "ORDER BY voucher_id, chosen_at, provider_id"))).all()]
    return {"vouchers": vouchers, "choices": choices}


def _scenarios() -> dict[str, list[list[Event]]]:
    """Named lists of batches (each batch one transaction)."""
    plain = [issued(f"v-{i}", code=f"C{i:04d}" if i % 2 else None) for i in range(30)]
    out = {
        "a run of new vouchers": [plain],
        "chosen before issued, in earlier batches and in the same one": [
            [chosen("v-1", "p-a", 1), chosen("v-2", "p-b", 2)],
            [chosen("v-3", "p-c", 3), issued("v-1", code="C1"), issued("v-2"), issued("v-3"), issued("v-4")]],
        "amended before issued: the amendment's terms stay, the kind's terms come from the issue": [
            [amended("v-1", 3, "4"), amended("v-2", 2, "5.25")],
            [issued("v-1", units="10", kind="personal_budget"), issued("v-2", units="12"), issued("v-5")],
            [amended("v-1", 2, "99"), amended("v-5", 2, "6")]],
        "duplicates inside one run and across batches": [
            [issued("v-1", code="AAAA"), issued("v-2"), issued("v-1"), issued("v-1", code="AAAA")],
            [issued("v-1"), issued("v-2", code="BBBB"), issued("v-2")]],
        "a voucher issued twice with other terms inside a run: the later one wins, a code is kept": [
            [issued("v-1", units="10", code="CODE"), issued("v-1", units="7.5", value=3100, kind="client_voucher"),
             issued("v-2", funder="092"), issued("v-2", funder="091", units="3")]],
        "a run of one": [[issued("v-9", code="ONE1")], [issued("v-9")]],
    }
    rng = random.Random(20)
    for n in range(4):  # shuffled mixes of every kind of event, cut into batches
        events: list[Event] = []
        for i in range(12):
            v = f"r-{i}"
            events += [issued(v, units=rng.choice(["1", "7.5", "10"]), code=rng.choice([None, f"K{i:03d}"]),
                              kind=rng.choice([None, "personal_budget", "client_voucher"]))
                       for _ in range(rng.randint(1, 3))]
            events += [chosen(v, f"p-{rng.randint(1, 3)}", rng.randint(0, 50)) for _ in range(rng.randint(0, 2))]
            events += [amended(v, rng.randint(2, 4), rng.choice(["2", "3.5"])) for _ in range(rng.randint(0, 2))]
        rng.shuffle(events)
        events.sort(key=lambda e: not isinstance(e, VoucherIssued) if n % 2 else 0)  # long runs of issues too
        cuts = sorted(rng.sample(range(1, len(events)), 3))
        out[f"shuffled {n}"] = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)])]
    return out


SCENARIOS = _scenarios()


@pytest.fixture
async def two_databases(request, pg, tmp_path):  # noqa: ANN001, ANN201
    """Two empty payments databases of the dialect asked for (migrated to head), with their sessions."""
    engines = []
    for side in ("one", "batch"):
        if request.param == "postgresql":
            url = await pg.create("payments")
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / side}.db"
        await asyncio.to_thread(upgrade, MIGRATIONS, url)
        engines.append(make_engine(url))
    yield engines
    for engine in engines:
        await engine.dispose()


@pytest.mark.parametrize("two_databases", ["postgresql", "sqlite"], indirect=True)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_run_folded_at_once_leaves_the_rows_one_at_a_time_would(two_databases, name: str) -> None:  # noqa: ANN001
    one, batch = two_databases
    await _fold(session_factory(one), SCENARIOS[name], at_once=False)
    await _fold(session_factory(batch), SCENARIOS[name], at_once=True)
    expected, got = await _rows(one), await _rows(batch)
    assert expected["vouchers"], "the scenario made no rows"
    assert got == expected
    # and what a charge reads there is what the events said
    by_id = {r["voucher_id"]: r for r in got["vouchers"]}
    if name == "a voucher issued twice with other terms inside a run: the later one wins, a code is kept":
        v1 = by_id["v-1"]
        assert (v1["units_per_period_x100"], v1["value_per_unit_cents"], v1["kind"], v1["voucher_code"]) == \
            (750, 3100, "client_voucher", "CODE")
        assert by_id["v-2"]["funder_id"] == "092"  # the first event made the row; its funder stays
    if name.startswith("amended before issued"):
        assert by_id["v-1"]["units_per_period_x100"] == 400 and by_id["v-1"]["budget_cents"] == 100_000
        assert by_id["v-5"]["units_per_period_x100"] == 600


@pytest.mark.parametrize("two_databases", ["postgresql", "sqlite"], indirect=True)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_issues_as_v2_events_leave_the_rows_the_v1_events_leave_and_again_nothing_changes(
        two_databases, name: str) -> None:  # noqa: ANN001
    """``voucher.issued.v2`` folds to exactly the rows ``voucher.issued.v1`` folds to, one at a time; the same v2
    events delivered again (every batch folded a second time) change nothing; and each v2 event's ``each()`` is the
    v1 events it was made of."""
    one, v2 = two_databases
    await _fold(session_factory(one), SCENARIOS[name], at_once=False)
    await _fold(session_factory(v2), SCENARIOS[name], at_once="v2")
    expected = await _rows(one)
    assert expected["vouchers"], "the scenario made no rows"
    assert await _rows(v2) == expected
    await _fold(session_factory(v2), SCENARIOS[name], at_once="v2")
    assert await _rows(v2) == expected, "a redelivered v2 event changed the projection"
    for batch in SCENARIOS[name]:
        issues = [e for e in batch if isinstance(e, VoucherIssued)]
        assert [x for e in as_v2(issues) for x in e.each()] == issues


@pytest.mark.parametrize("two_databases", ["sqlite"], indirect=True)
async def test_the_audit_trail_records_each_voucher_a_v2_event_lists_as_it_recorded_each_v1_event(two_databases):  # noqa: ANN001
    """The consumer's audit rows (``audit.record_bus``): a row per voucher a ``voucher.issued.v2`` lists, with the
    voucher as its resource, as the ``voucher.issued.v1`` events of the same vouchers made."""
    from seteli_shared.audit import record_bus

    events = [issued(f"v-{i}", funder="091" if i % 3 else "092") for i in range(7)]
    trails = []
    for engine, batch in zip(two_databases, (events, as_v2(events))):
        async with session_factory(engine)() as session, session.begin():
            await record_bus(session, [(Envelope.wrap(e, "vouchers"), "guest") for e in batch])
        async with engine.connect() as conn:
            trails.append([tuple(r) for r in (await conn.execute(sa.text(
                "SELECT channel, actor, roles, action, resource_type, resource_id, funder_id FROM audit_log "
                "ORDER BY id"))).all()])
    v1_trail, v2_trail = trails
    assert [r[5] for r in v1_trail] == [f"v-{i}" for i in range(7)] == [r[5] for r in v2_trail]
    assert {r[3] for r in v2_trail} == {"fi.seteli.voucher.issued.v2"}
    assert [(*r[:3], r[4], r[6]) for r in v2_trail] == [(*r[:3], r[4], r[6]) for r in v1_trail]
