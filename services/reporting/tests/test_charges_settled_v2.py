"""``charge.settled.v2`` (``ChargesSettled``: one event listing the charges of a settlement) folds into the same
read models as the ``charge.settled.v1`` events of the same charges, and a charge heard in both versions (the
producer emits both while consumers move over) counts once."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from seteli_shared.db import make_engine
from seteli_shared.events import ChargeAccepted, ChargeSettled, ChargesSettled, SettledCharge

from .folding import AT, issued, one_each, read_models_after, sqlite

CHARGES = [(f"c{i}", f"v{i % 3}", 2500 * (1 + i % 2)) for i in range(7)]


def month_before_settlement() -> list:
    accepted = [ChargeAccepted(charge_id=c, voucher_id=v, funder_id="091", provider_id="p1", category="home_care",
                               service_date=date(2026, 11, 20), units=Decimal(amount // 2500), unit_price_cents=2500,
                               amount_cents=amount, own_share_cents=0, accepted_at=AT) for c, v, amount in CHARGES]
    return [*issued(), *accepted]


def v1(charges: list) -> list[ChargeSettled]:
    return [ChargeSettled(charge_id=c, settlement_id="s1", voucher_id=v, funder_id="091", provider_id="p1",
                          category="home_care", gross_cents=a, fee_cents=a // 20, net_cents=a - a // 20, settled_at=AT)
            for c, v, a in charges]


def v2(charges: list) -> ChargesSettled:
    return ChargesSettled(settlement_id="s1", funder_id="091", provider_id="p1", settled_at=AT, charges=[
        SettledCharge(charge_id=c, voucher_id=v, category="home_care", gross_cents=a, fee_cents=a // 20,
                      net_cents=a - a // 20) for c, v, a in charges])


async def test_a_settlement_in_one_v2_event_folds_as_its_v1_events_do(tmp_path):  # noqa: ANN001
    before = month_before_settlement()
    one_by_one = await read_models_after(sqlite(tmp_path, "v1"), one_each([*before, *v1(CHARGES)]))
    listed = await read_models_after(sqlite(tmp_path, "v2"), one_each([*before, v2(CHARGES[:4]), v2(CHARGES[4:])]))
    assert listed == one_by_one
    assert any(row for row in one_by_one["reporting_charge"])  # the charges are there, settled


async def test_a_charge_heard_in_both_versions_counts_once(tmp_path):  # noqa: ANN001
    before = month_before_settlement()
    one_by_one = await read_models_after(sqlite(tmp_path, "v1"), one_each([*before, *v1(CHARGES)]))
    both = await read_models_after(sqlite(tmp_path, "both"),
                                 one_each([*before, *v1(CHARGES[:5]), v2(CHARGES), *v1(CHARGES[3:])]))
    assert both == one_by_one


async def test_on_postgresql_a_settlement_changes_only_what_it_settles(pg, tmp_path):  # noqa: ANN001
    """On PostgreSQL a charge fact folded earlier is written back only in the columns a batch changes (one
    ``UPDATE ... FROM unnest`` per set of columns): the read models equal SQLite's whole-row upserts, with the
    acceptance, the v2 settlement, a repeat of it and a v1 repeat of one charge each in a batch of its own."""
    url = await pg.create("reporting")
    before = month_before_settlement()
    events = [*before, v2(CHARGES[:4]), v2(CHARGES[4:]), v2(CHARGES[:4]), *v1(CHARGES[2:3])]
    expected = await read_models_after(sqlite(tmp_path, "sqlite"), one_each(events))
    got = await read_models_after(url, one_each(events))
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            settled = (await conn.execute(sa.text(
                "SELECT count(*), sum(gross_cents), sum(fee_cents) FROM reporting_charge WHERE settled_at IS NOT NULL "
                "AND accepted_at IS NOT NULL AND amount_cents = gross_cents"))).one()
    finally:
        await engine.dispose()
    assert got == expected
    assert tuple(settled) == (len(CHARGES), sum(a for _, _, a in CHARGES), sum(a // 20 for _, _, a in CHARGES))


async def test_on_postgresql_a_batch_larger_than_a_statement_folds_whole(pg, tmp_path, monkeypatch):  # noqa: ANN001
    """The charge facts of a batch are read and written back in parts of ``FACTS_PER_STATEMENT`` (an index plan
    whatever the table's size): a batch of several parts, the acceptances and the settlements each in one batch,
    gives the read models SQLite's one-event-at-a-time fold gives."""
    from reporting import handlers

    monkeypatch.setattr(handlers, "FACTS_PER_STATEMENT", 3)  # 7 charges: parts of 3, 3 and 1
    url = await pg.create("reporting")
    before = month_before_settlement()
    expected = await read_models_after(sqlite(tmp_path, "sqlite"), one_each([*before, v2(CHARGES)]))
    vouchers, accepted = before[:3], before[3:]
    got = await read_models_after(url, [vouchers, accepted, [v2(CHARGES)]])  # each run one batch
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            settled = (await conn.execute(sa.text(
                "SELECT count(*), sum(gross_cents) FROM reporting_charge WHERE settled_at IS NOT NULL"))).one()
    finally:
        await engine.dispose()
    assert got == expected
    assert tuple(settled) == (len(CHARGES), sum(a for _, _, a in CHARGES))


async def test_on_postgresql_a_run_of_v2_events_is_folded_set_based_to_the_same_rows(pg, tmp_path):  # noqa: ANN001
    """A run of ``charge.settled.v2`` on PostgreSQL writes its settled halves straight onto the facts by charge id
    (``handlers._fold_settled``) and works the sums out from what that returns. The charges it cannot settle that
    way take the general fold: settled before their acceptance arrived (no fact yet), settled already (a repeat, or
    heard in v1), a charge named twice in one batch; a cancelled charge and the charges of a voucher whose issue
    reporting has not heard count as they do one event at a time. The read models equal SQLite's, each event a
    batch of its own, and a whole repeat of the run changes nothing."""
    from seteli_shared.events import ChargeCancelled

    url = await pg.create("reporting")
    before = month_before_settlement()
    vouchers, accepted = before[:2], before[3:]  # v2 is not issued: its charges count under ``voucher:v2``
    c, v, a = CHARGES[1]
    cancelled = ChargeCancelled(charge_id=c, voucher_id=v, funder_id="091", provider_id="p1", category="home_care",
                                service_date=date(2026, 11, 20), units=Decimal(a // 2500), amount_cents=a,
                                cancelled_at=AT)
    run = [v2(CHARGES[:3]), v2(CHARGES[2:5]), v2(CHARGES[5:])]  # c2 twice; c5 and c6 not accepted yet
    batches = [vouchers, [cancelled], accepted[:5], v1(CHARGES[4:5]), run, accepted[5:], run]
    expected = await read_models_after(sqlite(tmp_path, "sqlite"), one_each([e for b in batches for e in b]))
    got = await read_models_after(url, batches)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            settled = (await conn.execute(sa.text(
                "SELECT count(*), sum(gross_cents) FROM reporting_charge WHERE settled_at IS NOT NULL"))).one()
    finally:
        await engine.dispose()
    assert got == expected
    assert tuple(settled) == (len(CHARGES), sum(a for _, _, a in CHARGES))
