"""Projections payments keeps of other services' facts, built only from their events."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import Envelope, FunderRegistered, ProviderApproved, VoucherIssued, VoucherProviderChosen
from seteli_shared.errors import PermanentMessageError
from seteli_shared.money import to_hundredths

from . import domain
from .models import ApprovalView, FunderView, VoucherView


async def on_funder_registered(session: AsyncSession, _env: Envelope, event: FunderRegistered) -> None:
    """The funder's contract terms that settlement uses (its fee rate)."""
    if not domain.fee_rate_in_range(event.operator_fee_rate):
        raise PermanentMessageError("operator_fee_rate_out_of_range")
    rate = format(event.operator_fee_rate, "f")
    view = await session.get(FunderView, event.funder_id)
    if view is None:
        session.add(FunderView(funder_id=event.funder_id, operator_fee_rate=rate))
    else:
        view.operator_fee_rate = rate
    await session.flush()


async def on_provider_approved(session: AsyncSession, _env: Envelope, event: ProviderApproved) -> None:
    if await session.get(ApprovalView, (event.funder_id, event.provider_id, event.category)) is None:
        session.add(ApprovalView(funder_id=event.funder_id, provider_id=event.provider_id,
                                 category=event.category, approved_at=event.approved_at))
        await session.flush()


async def _voucher(session: AsyncSession, voucher_id: str, funder_id: str, category: str) -> VoucherView:
    view = await session.get(VoucherView, voucher_id)
    if view is None:
        view = VoucherView(voucher_id=voucher_id, funder_id=funder_id, category=category)
        session.add(view)
    return view


async def on_voucher_issued(session: AsyncSession, _env: Envelope, event: VoucherIssued) -> None:
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    view.issued = True
    view.units_per_period_x100 = to_hundredths(event.units_per_period)
    view.period = event.period
    view.value_per_unit_cents = event.value_per_unit_cents
    view.valid_from = event.valid_from
    view.valid_until = event.valid_until
    await session.flush()


async def on_provider_chosen(session: AsyncSession, _env: Envelope, event: VoucherProviderChosen) -> None:
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    # events may be redelivered out of order: the latest choice wins
    if view.provider_chosen_at is None or event.chosen_at >= view.provider_chosen_at:
        view.provider_id = event.provider_id
        view.provider_chosen_at = event.chosen_at
    await session.flush()


HANDLERS = {
    FunderRegistered.event_type(): on_funder_registered,
    ProviderApproved.event_type(): on_provider_approved,
    VoucherIssued.event_type(): on_voucher_issued,
    VoucherProviderChosen.event_type(): on_provider_chosen,
}
