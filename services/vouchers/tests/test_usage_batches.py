"""The usage projection's batch handlers (``vouchers.usage``) on the real PostgreSQL: folding payments' charge
events one at a time and in batches of any size gives the same usage rows, the same exhausted vouchers and the
same ``VoucherExhausted`` events, in any order of the events (redeliveries under new message ids included); and
a batch costs a few statements, not a few per event."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.events import (AcceptedCharge, ChargeAccepted, ChargeCancelled, ChargeCorrected, ChargesAccepted,
                                  Envelope)
from seteli_shared.messaging import OutboxMessage
from vouchers.app import SPEC
from vouchers.lifecycle_models import Usage
from vouchers.models import Voucher
from vouchers.usage import BATCH_HANDLERS

AT = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)
#: a whole-validity voucher of 5 units (it can be exhausted), another of 4, and a monthly one (never exhausted)
VOUCHERS = {"v-valid-5": ("validity", 500), "v-valid-4": ("validity", 400), "v-month": ("month", 1000)}
#: the charges: (voucher, service date, units)
CHARGES = {f"c{i}": (list(VOUCHERS)[i % 3], date(2026, 6, 1 + i), Decimal(1 + i % 3)) for i in range(7)}


def accepted(cid: str) -> ChargeAccepted:
    vid, day, units = CHARGES[cid]
    return ChargeAccepted(charge_id=cid, voucher_id=vid, funder_id="091", provider_id="p", category="home_care",
                          service_date=day, units=units, unit_price_cents=2500, amount_cents=int(units * 2500),
                          own_share_cents=int(units * 100), accepted_at=AT + timedelta(minutes=int(cid[1:])))


def cancelled(cid: str) -> ChargeCancelled:
    vid, day, units = CHARGES[cid]
    return ChargeCancelled(charge_id=cid, voucher_id=vid, funder_id="091", provider_id="p", category="home_care",
                           service_date=day, units=units, amount_cents=int(units * 2500), cancelled_at=AT)


def corrected(cid: str, hundredths_off: int) -> ChargeCorrected:
    vid, day, units = CHARGES[cid]
    after = max(Decimal(0), units - Decimal(hundredths_off) / 100)
    return ChargeCorrected(correction_id=f"k-{cid}-{hundredths_off}", charge_id=cid, voucher_id=vid, funder_id="091",
                           provider_id="p", category="home_care", service_date=day, kind="partial", reason="fewer",
                           units=units - after, amount_cents=int((units - after) * 2500), own_share_cents=0,
                           fee_cents=0, net_cents=0, units_after=after, amount_cents_after=int(after * 2500),
                           own_share_cents_after=int(after * 100), settlement_id="s", corrected_at=AT)


event = st.one_of(
    st.sampled_from(list(CHARGES)).map(accepted),
    st.sampled_from(list(CHARGES)).map(cancelled),
    st.tuples(st.sampled_from(list(CHARGES)), st.integers(1, 300)).map(lambda t: corrected(*t)),
)


@pytest.fixture(scope="module")
async def database(postgres_admin_dsn):  # noqa: ANN001
    from conftest import PostgresDatabases  # the root conftest

    dbs = PostgresDatabases(postgres_admin_dsn)
    url = await dbs.create("vouchers")
    await upgrade_async(SPEC.migrations_dir, url)
    engine = make_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        await dbs.drop_all()


async def reset(engine) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        await conn.execute(sa.text("TRUNCATE vouchers_usage, vouchers_voucher, outbox"))
        await conn.execute(sa.insert(Voucher.__table__), [{
            "id": vid, "funder_id": "091", "decision_ref": f"D-{vid}", "client_ref": f"c-{vid}",
            "category": "home_care", "unit": "hour", "units_per_period_x100": units, "period": period,
            "value_per_unit_cents": 2500, "valid_from": date(2026, 6, 1), "valid_until": date(2026, 12, 31),
            "status": "provider_chosen", "issued_at": AT, "decision_version": 1, "carry_over": False,
            "kind": "service_voucher"} for vid, (period, units) in VOUCHERS.items()])


async def fold(engine, events: list, sizes: list[int]) -> None:  # noqa: ANN001
    """As the consumer does: the events in batches of ``sizes`` (cycled), each batch one transaction, each run
    of one type in it one call of its batch handler."""
    sessions = session_factory(engine)
    i, k = 0, 0
    while i < len(events):
        batch = events[i:i + sizes[k % len(sizes)]]
        i, k = i + len(batch), k + 1
        async with sessions() as session:
            async with session.begin():
                j = 0
                while j < len(batch):
                    run_end = j
                    while run_end < len(batch) and batch[run_end].event_type() == batch[j].event_type():
                        run_end += 1
                    await BATCH_HANDLERS[batch[j].event_type()](
                        session, [(Envelope.wrap(e, "payments"), e) for e in batch[j:run_end]])
                    j = run_end


async def state(engine) -> tuple:  # noqa: ANN001
    u, v, o = Usage.__table__, Voucher.__table__, OutboxMessage.__table__
    async with engine.connect() as conn:
        usage = (await conn.execute(sa.select(u).order_by(u.c.charge_id))).all()
        vouchers = (await conn.execute(sa.select(v.c.id, v.c.status, v.c.exhausted_at).order_by(v.c.id))).all()
        bodies = (await conn.execute(sa.select(o.c.routing_key, o.c.body).order_by(o.c.seq))).all()
    events = [(key, {k: val for k, val in json.loads(body)["data"].items()}) for key, body in bodies]
    return [tuple(r) for r in usage], [tuple(r) for r in vouchers], events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event, max_size=18), sizes=st.lists(st.integers(1, 7), min_size=1, max_size=4))
async def test_one_at_a_time_and_in_batches_give_the_same_usage_and_exhaustions(database, events, sizes):  # noqa: ANN001
    await reset(database)
    await fold(database, events, [1])
    one_at_a_time = await state(database)
    await reset(database)
    await fold(database, events, sizes)
    assert await state(database) == one_at_a_time


async def test_the_charge_that_uses_the_units_up_exhausts_the_voucher_once(database):  # noqa: ANN001
    await reset(database)
    # v-valid-5 gets c0 (1 unit), c3 (1), c6 (1) ... : 5 units in all run out at the charge that reaches 5
    runs = [accepted("c0"), accepted("c3"), accepted("c6"), accepted("c0")]
    extra = ChargeAccepted(**{**accepted("c3").model_dump(), "charge_id": "c9", "units": Decimal("2.5"),
                              "accepted_at": AT + timedelta(hours=1)})
    later = ChargeAccepted(**{**extra.model_dump(), "charge_id": "c10", "accepted_at": AT + timedelta(hours=2)})
    await fold(database, [*runs, extra, later], [10])
    usage, vouchers, events = await state(database)
    assert dict((r[0], r[1]) for r in vouchers) == {"v-valid-5": "exhausted", "v-valid-4": "provider_chosen",
                                                   "v-month": "provider_chosen"}
    assert [r[2] for r in vouchers if r[0] == "v-valid-5"] == [extra.accepted_at]
    [(key, data)] = events
    assert key == "voucher.exhausted.v1"
    assert (data["voucher_id"], data["units_used"]) == ("v-valid-5", "5.50")


async def test_a_batch_costs_a_few_statements_whatever_its_size(database):  # noqa: ANN001
    await reset(database)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(statement)

    sa.event.listen(database.sync_engine, "before_cursor_execute", count)
    try:
        many = [ChargeAccepted(**{**accepted("c2").model_dump(), "charge_id": f"m{i}"}) for i in range(300)]
        await fold(database, many, [300])
    finally:
        sa.event.remove(database.sync_engine, "before_cursor_execute", count)
    # a monthly voucher: never exhausted, so its row is not even locked
    folded = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "select pg_", "SELECT pg_"))]
    assert len(folded) <= 3, folded  # the rows inserted, the whole-validity vouchers among them read and locked
    async with database.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM vouchers_usage"))).scalar_one() == 300


# ------------------------------------------------------------------ charge.accepted.v2
def listed(events: list, per_event: int) -> list:
    """The events with each run of ``ChargeAccepted`` in a row as ``ChargesAccepted`` (``charge.accepted.v2``) of
    at most ``per_event`` charges, in the same order: what payments' bulk writes instead of the v1 events."""
    out: list = []
    run: list[ChargeAccepted] = []

    def flush() -> None:
        for i in range(0, len(run), per_event):
            out.append(ChargesAccepted(funder_id="091", provider_id="p", charges=[AcceptedCharge(**{
                k: v for k, v in e.model_dump().items() if k not in ("funder_id", "provider_id")})
                for e in run[i:i + per_event]]))
        run.clear()

    for e in events:
        if isinstance(e, ChargeAccepted):
            run.append(e)
        else:
            flush()
            out.append(e)
    flush()
    return out


def test_a_v2_event_stands_for_the_v1_events_of_its_charges():
    v1 = [accepted(c) for c in CHARGES]
    [v2] = listed(v1, 10)
    assert v2.each() == v1
    assert [e.model_dump() for e in v2.each()] == [e.model_dump() for e in v1]
    # the envelope travels and comes back as the same event
    env = Envelope.wrap(v2, "payments")
    assert Envelope.model_validate_json(env.model_dump_json()).event() == v2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event, max_size=18), per_event=st.integers(1, 4),
       sizes=st.lists(st.integers(1, 5), min_size=1, max_size=3))
async def test_v2_gives_the_usage_and_exhaustions_of_v1_and_both_count_each_charge_once(
        database, events, per_event, sizes):  # noqa: ANN001
    """The same charges as ``charge.accepted.v2`` (in batches of any size) give the same usage rows, exhausted
    vouchers and ``VoucherExhausted`` events as their v1 events one at a time; heard in both versions (v1, then
    v2 as payments' ``ACCEPTED_EVENTS=both`` writes them, or v2 redelivered) each charge counts once."""
    await reset(database)
    await fold(database, events, [1])
    one_at_a_time = await state(database)
    await reset(database)
    await fold(database, listed(events, per_event), sizes)
    assert await state(database) == one_at_a_time
    await fold(database, listed(events, per_event), [1])  # the v2 events again (a redelivery under new ids)
    assert await state(database) == one_at_a_time
    await reset(database)
    both = [x for e in events for x in ([e, *listed([e], 1)] if isinstance(e, ChargeAccepted) else [e])]
    await fold(database, both, sizes)
    assert await state(database) == one_at_a_time


async def test_a_v2_event_exhausts_at_the_charge_that_uses_the_units_up(database):  # noqa: ANN001
    """The exhaustion of a whole-validity voucher by a v2 event: at the listed charge that used the units up,
    with the units used then, once (a later v1 of the same charges changes nothing)."""
    await reset(database)
    extra = ChargeAccepted(**{**accepted("c3").model_dump(), "charge_id": "c9", "units": Decimal("2.5"),
                              "accepted_at": AT + timedelta(hours=1)})
    later = ChargeAccepted(**{**extra.model_dump(), "charge_id": "c10", "accepted_at": AT + timedelta(hours=2)})
    charges = [accepted("c0"), accepted("c3"), accepted("c6"), extra, later]
    await fold(database, listed(charges, 1000), [1])
    await fold(database, charges, [10])
    usage, vouchers, events = await state(database)
    assert dict((r[0], r[1]) for r in vouchers)["v-valid-5"] == "exhausted"
    assert [r[2] for r in vouchers if r[0] == "v-valid-5"] == [extra.accepted_at]
    [(key, data)] = events
    assert (key, data["voucher_id"], data["units_used"]) == ("voucher.exhausted.v1", "v-valid-5", "5.50")
    assert len(usage) == 5
