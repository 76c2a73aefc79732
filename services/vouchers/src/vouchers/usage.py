"""The usage projection: payments' charge events folded into ``Usage`` (one row per charge), a run of events of
one type at a time (the consumer's batch handlers; a single event is a run of one).

Each run is one statement on the usage table whatever its length (``rows.RowsInsert``), so the vouchers
service keeps up with payments at month-end (one ``ChargeAccepted`` per charge; it drained them at about 300/s
one statement and one voucher lock per event). The result is the same as folding the events one at a time, in
any order (a property test checks it):

- ``ChargeAccepted`` inserts the charge's row unless one is there (the same charge again, or its cancellation
  or correction heard first: the acceptance is then a repeat); a ``ChargesAccepted`` (``charge.accepted.v2``, a
  bulk's charges listed in one event) is each charge's ``ChargeAccepted`` in the order listed;
- ``ChargeCancelled`` zeroes the row (or leaves a zero row that makes a late acceptance a repeat);
- ``ChargeCorrected`` keeps the smallest figures seen (corrections only ever lower them);
- a whole-validity voucher in force whose units are all used is exhausted (``VoucherExhausted``) at the
  acceptance that used them up, once: only those vouchers are read and locked, not every charge's voucher.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared import periods
from seteli_shared.events import (ChargeAccepted, ChargeCancelled, ChargeCorrected, ChargesAccepted, Envelope,
                                  VoucherExhausted)
from seteli_shared.logging import bind_correlation, get_logger
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.outbox import add_events
from seteli_shared.rows import RowsInsert

from . import domain
from .lifecycle import EXHAUSTED, SOURCE
from .lifecycle_models import Usage
from .models import Voucher

log = get_logger(__name__)
U = Usage.__table__
COLUMNS = ["charge_id", "voucher_id", "provider_id", "service_date", "units_x100", "amount_cents", "own_share_cents",
           "accepted_at"]

#: an acceptance adds the charge's row unless the charge has one (returns the rows added)
_ACCEPT = RowsInsert(U, COLUMNS, conflict=["charge_id"], returning=["charge_id"])
#: a cancellation zeroes the row (or leaves a zero row in its place)
_CANCEL = RowsInsert(U, COLUMNS, conflict=["charge_id"],
                     update=lambda ex, t: {"units_x100": 0, "amount_cents": 0, "own_share_cents": 0})
#: a correction keeps the smallest figures seen
_CORRECT = RowsInsert(U, COLUMNS, conflict=["charge_id"], update=lambda ex, t: {
    name: sa.case((ex[name] < t.c[name], ex[name]), else_=t.c[name])
    for name in ("units_x100", "amount_cents", "own_share_cents")})


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def _row(e: ChargeAccepted | ChargeCancelled | ChargeCorrected, units_x100: int, amount: int, own: int,
         at: datetime) -> dict[str, Any]:
    return {"charge_id": e.charge_id, "voucher_id": e.voucher_id, "provider_id": e.provider_id,
            "service_date": e.service_date, "units_x100": units_x100, "amount_cents": amount, "own_share_cents": own,
            "accepted_at": _utc(at)}


def _first_per_charge(items: list[tuple[Envelope, Any]]) -> dict[str, tuple[Envelope, Any]]:
    """Each charge's first event of the run (in delivery order): what one at a time would have applied first."""
    out: dict[str, tuple[Envelope, Any]] = {}
    for env, e in items:
        out.setdefault(e.charge_id, (env, e))
    return out


async def charges_accepted(session: AsyncSession, items: list[tuple[Envelope, ChargeAccepted]]) -> None:
    """Fold a run of accepted charges into the usage; exhaust the whole-validity vouchers they use up."""
    first = _first_per_charge(items)
    rows = [_row(e, to_hundredths(e.units), e.amount_cents, e.own_share_cents, e.accepted_at)
            for _env, e in first.values()]
    added = set((await _ACCEPT.execute(session, rows)).scalars().all())
    new = [(env, e) for env, e in first.values() if e.charge_id in added]
    if new:
        await _exhaust(session, new)


async def charges_accepted_v2(session: AsyncSession, items: list[tuple[Envelope, ChargesAccepted]]) -> None:
    """A run of ``charge.accepted.v2``: each charge listed folded as the ``ChargeAccepted`` it stands for, in the
    order listed, all in one run (one statement whatever the count): the same rows and exhaustions as its
    version 1 events one at a time; a charge already heard (in either version) is a repeat."""
    await charges_accepted(session, [(env, one) for env, e in items for one in e.each()])


async def charges_cancelled(session: AsyncSession, items: list[tuple[Envelope, ChargeCancelled]]) -> None:
    """A cancelled charge no longer counts: its usage row keeps its place with nothing in it."""
    await _CANCEL.execute(session, [_row(e, 0, 0, 0, e.cancelled_at) for _env, e in _first_per_charge(items).values()])


async def charges_corrected(session: AsyncSession, items: list[tuple[Envelope, ChargeCorrected]]) -> None:
    """A settled charge corrected: what the correction removes no longer counts against the voucher (the
    smallest figures of the run's corrections of a charge, then the smallest of those and the row's)."""
    rows: dict[str, dict[str, Any]] = {}
    for _env, e in items:
        row = _row(e, to_hundredths(e.units_after), e.amount_cents_after, e.own_share_cents_after, e.corrected_at)
        held = rows.setdefault(e.charge_id, row)
        for name in ("units_x100", "amount_cents", "own_share_cents"):
            held[name] = min(held[name], row[name])
    await _CORRECT.execute(session, list(rows.values()))


# ------------------------------------------------------------------ exhausted
async def _exhaust(session: AsyncSession, new: list[tuple[Envelope, ChargeAccepted]]) -> None:
    """The whole-validity vouchers in force among the new charges' (read and locked in id order: the others
    cannot be exhausted, so they are neither read nor locked), each exhausted at the charge that used its
    units up, with the units used at that point; the events in the order of those charges."""
    ids = sorted({e.voucher_id for _env, e in new})
    among = (Voucher.id == sa.any_(sa.cast(sa.bindparam("ids", ids), postgresql.ARRAY(sa.String)))
             if session.bind.dialect.name == "postgresql" else Voucher.id.in_(ids))  # one statement whatever the size
    vouchers = (await session.execute(
        sa.select(Voucher).where(among, Voucher.period == periods.VALIDITY,
                                 Voucher.status.in_(domain.STATUSES),
                                 Voucher.units_per_period_x100.is_not(None)).order_by(Voucher.id).with_for_update()
    )).scalars().all()
    found: list[tuple[int, Voucher, int]] = []
    by_voucher: dict[str, list[tuple[int, ChargeAccepted]]] = {}
    for i, (_env, e) in enumerate(new):  # once for the run (a v2 run lists thousands of charges)
        by_voucher.setdefault(e.voucher_id, []).append((i, e))
    for voucher in vouchers:
        at = await _using_up(session, voucher, by_voucher[voucher.id])
        if at is not None:
            found.append((*at[:1], voucher, at[1]))
    for index, voucher, used_x100 in sorted(found, key=lambda f: f[0]):
        env, e = new[index]
        bind_correlation(env.correlationid, causation_id=env.id)
        now = _utc(e.accepted_at)
        voucher.status, voucher.exhausted_at = EXHAUSTED, now
        session.add(voucher)
        await session.flush()
        await add_events(session, [VoucherExhausted(voucher_id=voucher.id, funder_id=voucher.funder_id,
                                                    category=voucher.category, units_used=from_hundredths(used_x100),
                                                    exhausted_at=now)], SOURCE)
        log.info("voucher.exhausted", voucher_id=voucher.id)


async def _using_up(session: AsyncSession, voucher: Voucher, its: list[tuple[int, ChargeAccepted]]
                    ) -> tuple[int, int] | None:
    """(index of the charge that used the voucher's units up, units used then), as one at a time: the units
    used before the run, then each charge's in delivery order, with nothing left after one of them."""
    start, end = periods.period_bounds(voucher.period, voucher.valid_from, voucher.valid_until, its[0][1].service_date)
    used_after = int((await session.execute(sa.select(sa.func.coalesce(sa.func.sum(U.c.units_x100), 0)).where(
        U.c.voucher_id == voucher.id, U.c.service_date >= start, U.c.service_date <= end))).scalar_one())
    in_period = [(i, e) for i, e in its if start <= e.service_date <= end]
    used = used_after - sum(to_hundredths(e.units) for _i, e in in_period)
    for i, e in its:
        if start <= e.service_date <= end:
            used += to_hundredths(e.units)
        left = periods.period_units(units_per_period_x100=voucher.units_per_period_x100, period=voucher.period,
                                    carry_over=voucher.carry_over, valid_from=voucher.valid_from,
                                    valid_until=voucher.valid_until, day=e.service_date, used_x100=used,
                                    previous_used_x100=None).left_x100
        if left <= 0:
            return i, used
    return None


#: the consumer's batch handlers: a run of one type at a time
BATCH_HANDLERS = {
    ChargeAccepted.event_type(): charges_accepted,
    ChargesAccepted.event_type(): charges_accepted_v2,
    ChargeCancelled.event_type(): charges_cancelled,
    ChargeCorrected.event_type(): charges_corrected,
}
