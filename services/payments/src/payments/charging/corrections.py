"""Corrections after settlement: a provider (or its funder's finance staff) corrects a settled charge,
wholly (a reversal) or in part (fewer units, a lower amount). One transaction: the correction row
(append-only), the charge's running totals of what corrections removed, a reversing ledger entry,
``ChargeCorrected`` in the outbox and the audit entry. The settlement run then offsets the correction
against the provider's next payout from that funder (``payouts.settle``); one that no payout takes is
claimed back from the provider (``banking``). Time from the ``Clock``."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, ensure_visible
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import ChargeCorrected
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import add_event
from seteli_shared.uow import SessionUnitOfWork

from ..ledger.books import post
from ..ledger.postings import correction_postings
from ..models import SOURCE, Charge, ChargeCorrection
from . import correction_rules as rules
from . import domain
from .cancellation import voucher_moved

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)


def _original(charge: Charge) -> rules.ChargeFigures:
    return rules.ChargeFigures(charge.units_x100, charge.amount_cents, charge.own_share_cents,
                                charge.client_fee_cents, charge.fee_cents or 0)


async def _removed_so_far(session: AsyncSession, charge_id: str) -> rules.ChargeFigures:
    c = ChargeCorrection
    row = (await session.execute(select(
        func.coalesce(func.sum(c.units_x100), 0), func.coalesce(func.sum(c.amount_cents), 0),
        func.coalesce(func.sum(c.own_share_cents), 0), func.coalesce(func.sum(c.client_fee_cents), 0),
        func.coalesce(func.sum(c.fee_cents), 0)).where(c.charge_id == charge_id))).one()
    return rules.ChargeFigures(*(int(x) for x in row))


async def correct_charge(uow: SessionUnitOfWork, clock: Clock, principal: Principal, charge_id: str, *,
                         reason: str, reversal: bool, units_x100: int | None = None,
                         amount_cents: int | None = None) -> ChargeCorrection:
    """Correct a settled charge (the caller's provider's, or its funder's); refused for an unsettled charge
    (``charge_not_settled``: cancel it), a cancelled one, one reversed already, or figures that would
    raise the charge."""
    async with uow:
        session = uow.session
        charge = (await session.execute(select(Charge).where(Charge.id == charge_id).with_for_update())
                  ).scalar_one_or_none()
        if charge is None:
            raise NotFound("charge")
        ensure_visible(principal, "charge", funder_id=charge.funder_id, provider_id=charge.provider_id)
        if charge.status == domain.CANCELLED:
            raise Conflict("charge_cancelled", "the charge was cancelled: there is nothing to correct")
        if charge.status != domain.SETTLED or charge.settlement_id is None:
            raise Conflict("charge_not_settled", "the charge is not settled yet: cancel it and charge again")
        original = _original(charge)
        now_figures = original.minus(await _removed_so_far(session, charge.id))
        fix = rules.correct(original, now_figures, reversal=reversal, units_x100=units_x100,
                             amount_cents=amount_cents)
        at = clock.now()
        removed = fix.removed
        correction = ChargeCorrection(
            id=new_id(), charge_id=charge.id, voucher_id=charge.voucher_id, funder_id=charge.funder_id,
            provider_id=charge.provider_id, category=charge.category, service_date=charge.service_date,
            kind=fix.kind, reason=reason, units_x100=removed.units_x100, amount_cents=removed.amount_cents,
            own_share_cents=removed.own_share_cents, client_fee_cents=removed.client_fee_cents,
            fee_cents=removed.fee_cents, net_cents=fix.net_cents, corrected_settlement_id=charge.settlement_id,
            created_at=at)
        session.add(correction)
        charge.corrected_units_x100 += removed.units_x100
        charge.corrected_amount_cents += removed.amount_cents
        session.add(charge)
        await session.flush()
        await session.execute(voucher_moved(charge.voucher_id))
        if removed.amount_cents:
            await post(session, "charge_correction", correction.id, correction_postings(
                charge.funder_id, charge.provider_id, removed.amount_cents), at)
        await add_event(session, ChargeCorrected(
            correction_id=correction.id, charge_id=charge.id, voucher_id=charge.voucher_id,
            funder_id=charge.funder_id, provider_id=charge.provider_id, category=charge.category,
            service_date=charge.service_date, kind=fix.kind, reason=reason,
            units=from_hundredths(removed.units_x100), amount_cents=removed.amount_cents,
            own_share_cents=removed.own_share_cents, client_fee_cents=removed.client_fee_cents,
            fee_cents=removed.fee_cents, net_cents=fix.net_cents, units_after=from_hundredths(fix.after.units_x100),
            amount_cents_after=fix.after.amount_cents, own_share_cents_after=fix.after.own_share_cents,
            settlement_id=charge.settlement_id, corrected_at=at), SOURCE)
        await audit.record(session, principal, "charge.correct", "charge", charge.id, charge.funder_id)
        await uow.commit()
    log.info("charge.corrected", charge_id=charge.id, correction_id=correction.id, kind=fix.kind,
             amount_cents=removed.amount_cents, net_cents=fix.net_cents)
    return correction


async def corrections_of(sessions: Sessions, principal: Principal, charge_id: str) -> list[ChargeCorrection]:
    """The charge's corrections in the order they were made (the caller's tenant's charge only)."""
    async with sessions() as session:
        charge = await session.get(Charge, charge_id)
        if charge is None:
            raise NotFound("charge")
        ensure_visible(principal, "charge", funder_id=charge.funder_id, provider_id=charge.provider_id)
        return list((await session.execute(select(ChargeCorrection).where(ChargeCorrection.charge_id == charge_id)
                                           .order_by(ChargeCorrection.created_at, ChargeCorrection.id))).scalars())
