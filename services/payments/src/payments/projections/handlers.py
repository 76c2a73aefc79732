"""Projections payments keeps of other services' facts, built only from their events: vouchers (terms,
kinds, codes, choices, revocations), funders' contract terms, approvals, price lists and providers."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.approvals import ApprovalProjection, as_utc
from seteli_shared.errors import PermanentMessageError
from seteli_shared.events import (Envelope, FunderRegistered, FunderTermsChanged, PriceListPublished, VoucherAmended,
                                  VoucherIssued, VoucherProviderChosen, VoucherRevoked)
from seteli_shared.money import to_hundredths

from ..models import ApprovalView, FunderView, PriceListView, ProviderChoiceView, VoucherView
from ..settlement.figures import fee_rate_in_range
from . import providers


async def _funder_terms(session: AsyncSession, funder_id: str, rate: Decimal, deadline_days: int | None,
                       at: datetime) -> None:
    """The funder's contract terms that settlement and intake use (its fee rate, its charging deadline),
    as of ``at``: terms older than those held change nothing (a registration heard after a change)."""
    if not fee_rate_in_range(rate):
        raise PermanentMessageError("operator_fee_rate_out_of_range")
    if deadline_days is not None and not 1 <= deadline_days <= 3650:
        raise PermanentMessageError("charge_deadline_days_out_of_range")
    at = as_utc(at)
    view = await session.get(FunderView, funder_id, with_for_update=True)
    if view is None:
        view = FunderView(funder_id=funder_id, operator_fee_rate="0")
    elif view.terms_at is not None and as_utc(view.terms_at) > at:
        return
    view.operator_fee_rate, view.charge_deadline_days, view.terms_at = format(rate, "f"), deadline_days, at
    session.add(view)
    await session.flush()


async def on_funder_registered(session: AsyncSession, _env: Envelope, event: FunderRegistered) -> None:
    await _funder_terms(session, event.funder_id, event.operator_fee_rate, event.charge_deadline_days,
                        event.registered_at)
    view = await session.get(FunderView, event.funder_id, with_for_update=True)
    if view is not None and view.name != event.name[:200]:  # its invoices' buyer
        view.name = event.name[:200]
        session.add(view)
        await session.flush()


async def on_funder_terms_changed(session: AsyncSession, _env: Envelope, event: FunderTermsChanged) -> None:
    await _funder_terms(session, event.funder_id, event.operator_fee_rate, event.charge_deadline_days,
                        event.changed_at)


# ------------------------------------------------------------------ approvals and their life cycle
#: the approval projection on payments' own table, folded by the code vouchers' is folded by (``seteli_shared``)
APPROVALS = ApprovalProjection(ApprovalView)


# ------------------------------------------------------------------ price lists
async def on_price_list_published(session: AsyncSession, _env: Envelope, event: PriceListPublished) -> None:
    """Every published list is kept (the history decides the price on each service date); a list is
    never changed once published, so one heard of again changes nothing."""
    if event.unit_price_cents <= 0 or any(not isinstance(v, int) or v <= 0 for v in event.tariffs.values()):
        raise PermanentMessageError("price_not_positive")
    if await session.get(PriceListView, event.price_list_id) is not None:
        return
    session.add(PriceListView(
        price_list_id=event.price_list_id, provider_id=event.provider_id, funder_id=event.funder_id,
        category=event.category, unit=event.unit, unit_price_cents=event.unit_price_cents,
        tariffs=dict(event.tariffs), effective_from=event.effective_from, published_at=as_utc(event.published_at)))
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
    # the kind and its terms (an amendment never changes the kind; budget and fee come only from here)
    view.kind = event.kind or "service_voucher"
    view.budget_cents, view.categories = event.budget_cents, event.categories
    view.max_value_per_unit_cents, view.client_fee_cents = event.max_value_per_unit_cents, event.client_fee_cents
    view.value_table_version = event.value_table_version
    if event.voucher_code is not None:
        view.voucher_code = event.voucher_code
    if view.decision_version is not None:
        await session.flush()
        return  # an amendment arrived first: its terms are newer
    view.units_per_period_x100 = to_hundredths(event.units_per_period)
    view.period = event.period
    view.value_per_unit_cents = event.value_per_unit_cents
    view.valid_from = event.valid_from
    view.valid_until = event.valid_until
    view.carry_over = event.carry_over
    await session.flush()


async def on_voucher_amended(session: AsyncSession, _env: Envelope, event: VoucherAmended) -> None:
    """A later decision's terms replace older ones (events may come in any order: the highest version wins)."""
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    if view.decision_version is not None and event.decision_version <= view.decision_version:
        return
    view.decision_version = event.decision_version
    view.units_per_period_x100 = to_hundredths(event.units_per_period)
    view.period, view.value_per_unit_cents = event.period, event.value_per_unit_cents
    view.valid_from, view.valid_until = event.valid_from, event.valid_until
    view.carry_over = event.carry_over
    await session.flush()


async def on_voucher_revoked(session: AsyncSession, _env: Envelope, event: VoucherRevoked) -> None:
    """Kept for the charging rules (services before ``revoked_from`` stay chargeable within a grace)."""
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    if view.revoked_from is None or event.effective_from < view.revoked_from:
        view.revoked_at, view.revoked_from = event.revoked_at, event.effective_from
    await session.flush()


async def on_provider_chosen(session: AsyncSession, _env: Envelope, event: VoucherProviderChosen) -> None:
    view = await _voucher(session, event.voucher_id, event.funder_id, event.category)
    # events may be redelivered out of order: the latest choice wins
    if view.provider_chosen_at is None or event.chosen_at >= view.provider_chosen_at:
        view.provider_id = event.provider_id
        view.provider_chosen_at = event.chosen_at
    # and every choice is kept with the first service date it covers (lifecycle.provider_on)
    key = (event.voucher_id, as_utc(event.chosen_at), event.provider_id)
    if await session.get(ProviderChoiceView, key) is None:
        session.add(ProviderChoiceView(voucher_id=event.voucher_id, chosen_at=key[1], provider_id=event.provider_id,
                                       effective_from=event.effective_from or as_utc(event.chosen_at).date()))
    await session.flush()


HANDLERS = {
    FunderRegistered.event_type(): on_funder_registered,
    FunderTermsChanged.event_type(): on_funder_terms_changed,
    **APPROVALS.handlers(),
    PriceListPublished.event_type(): on_price_list_published,
    VoucherIssued.event_type(): on_voucher_issued,
    VoucherProviderChosen.event_type(): on_provider_chosen,
    VoucherAmended.event_type(): on_voucher_amended,
    VoucherRevoked.event_type(): on_voucher_revoked,
    **providers.HANDLERS,
}
