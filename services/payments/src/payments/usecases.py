"""Payments use cases: each one transaction that changes state, posts to the ledger, records its
audit entry and its events in the outbox together; and the tenant-scoped reads. Time comes from the
``Clock`` passed in."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from itertools import groupby

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit, periods
from seteli_shared.auth import Principal, TenantScope
from seteli_shared.clock import Clock
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import ChargeAccepted, ChargeSettled, SettlementCreated
from seteli_shared.logging import get_logger, new_id
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import add_event, add_events
from seteli_shared.schemas import PageParams, paginate

from . import domain, lifecycle
from .models import (ApprovalView, Charge, FunderView, LedgerEntry, LedgerTransaction, PriceListView,
                     ProviderChoiceView, Settlement, VoucherView)

SOURCE = "payments"
Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)


async def post(session: AsyncSession, kind: str, reference: str, postings: list[tuple[str, int]],
               at: datetime) -> None:
    txn_id = new_id()
    session.add(LedgerTransaction(id=txn_id, kind=kind, reference=reference, created_at=at))
    await session.flush()
    await session.execute(LedgerEntry.__table__.insert(), [
        {"transaction_id": txn_id, "account": account, "amount_cents": amount} for account, amount in postings])


def _terms(view: VoucherView | None) -> domain.VoucherTerms | None:
    if view is None or not view.issued:
        return None
    return domain.VoucherTerms(view.funder_id, view.category, view.units_per_period_x100, view.period,
                               view.value_per_unit_cents, view.valid_from, view.valid_until, view.provider_id,
                               **_kind_terms(view))


def _kind_terms(view: VoucherView) -> dict:
    """The voucher's kind and its kind's terms, as the charging rules take them."""
    return {"kind": view.kind or domain.SERVICE_VOUCHER, "budget_cents": view.budget_cents,
            "categories": tuple(view.categories or ()), "max_value_per_unit_cents": view.max_value_per_unit_cents,
            "client_fee_cents": view.client_fee_cents}


async def charge_voucher(sessions: Sessions, clock: Clock, principal: Principal, voucher_id: str,
                        provider_reference: str, req: domain.ChargeRequest) -> tuple[Charge, bool]:
    """A provider charges a voucher: the charge and whether it is new (a retry answers the first)."""

    async def accept() -> tuple[Charge, bool]:
        async with unit_of_work(sessions) as session:
            charge, new = await accept_charge(session, clock, voucher_id, provider_reference, req)
            if new:
                await audit.record(session, principal, "charge.create", "charge", charge.id, charge.funder_id)
        return charge, new

    charge, new = await once_more_on_conflict(accept)
    if new:
        log.info("charge.accepted", charge_id=charge.id, voucher_id=charge.voucher_id, amount_cents=charge.amount_cents)
    return charge, new


async def _life_cycle_terms(session: AsyncSession, view: VoucherView, terms: domain.VoucherTerms,
                            req: domain.ChargeRequest, today: date) -> domain.VoucherTerms:
    """The voucher's terms for this charge after its life cycle: refused after a revocation (beyond the
    grace) or from a provider switched away from by the service date; the provider the service date
    belongs to as the chosen one; the period's units with what the previous month carried over."""
    lifecycle.check_revocation(view.revoked_at, view.revoked_from, req.service_date, today)
    choices = [lifecycle.Choice(c.provider_id, c.effective_from, c.chosen_at) for c in (await session.execute(
        select(ProviderChoiceView).where(ProviderChoiceView.voucher_id == view.voucher_id))).scalars()]
    lifecycle.check_chosen_on(choices, req.provider_id, req.service_date)
    provider = lifecycle.provider_on(choices, req.service_date) or terms.provider_id
    previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, req.service_date)
    carried = 0
    if view.carry_over and previous is not None and terms.units_per_period_x100 is not None:
        previous_used = (await session.execute(select(func.coalesce(func.sum(Charge.units_x100), 0)).where(
            Charge.voucher_id == view.voucher_id, Charge.service_date >= previous[0],
            Charge.service_date <= previous[1]))).scalar_one()
        carried = periods.carried_in_x100(terms.units_per_period_x100, True, int(previous_used))
    return replace(terms, provider_id=provider, units_per_period_x100=(
        None if terms.units_per_period_x100 is None else terms.units_per_period_x100 + carried))


async def accept_charge(session: AsyncSession, clock: Clock, voucher_id: str, provider_reference: str,
                        req: domain.ChargeRequest) -> tuple[Charge, bool]:
    """Returns the charge and whether it is new. The provider's own reference makes a retry safe."""
    # take the voucher's write lock first: concurrent charges of one voucher (and twins of one
    # request) queue up here, and each then sees what the ones before it committed
    await session.execute(update(VoucherView).where(VoucherView.voucher_id == voucher_id)
                          .values(version=VoucherView.version + 1))
    earlier = (await session.execute(select(Charge).where(
        Charge.provider_id == req.provider_id, Charge.provider_reference == provider_reference))).scalar_one_or_none()
    if earlier is not None:
        same = (earlier.voucher_id, earlier.service_date, earlier.units_x100, earlier.tariff) == (
            voucher_id, req.service_date, req.units_x100, req.tariff) and req.unit_price_cents in (
            None, earlier.unit_price_cents)
        if not same:
            raise Conflict("duplicate_reference", "this provider reference was already used for another charge",
                           charge_id=earlier.id)
        return earlier, False
    view = await session.get(VoucherView, voucher_id)
    terms = _terms(view)
    approval, used, money_used, price_lists = None, 0, 0, []
    category = None
    if terms is not None:
        category = domain.charge_category(terms, req.category)  # a personal budget's: any of its categories
        row = await session.get(ApprovalView, (terms.funder_id, req.provider_id, category))
        approval = None if row is None else row.state()
        start, end = domain.period_bounds(terms, req.service_date)
        used, money_used = (await session.execute(select(
            func.coalesce(func.sum(Charge.units_x100), 0), func.coalesce(func.sum(Charge.amount_cents), 0)).where(
            Charge.voucher_id == voucher_id, Charge.service_date >= start, Charge.service_date <= end))).one()
        price_lists = [p.price_list() for p in (await session.execute(select(PriceListView).where(
            PriceListView.provider_id == req.provider_id, PriceListView.funder_id == terms.funder_id,
            PriceListView.category == category, PriceListView.effective_from <= req.service_date))).scalars()]
    if terms is not None:  # switches, revocation and carried-over units (lifecycle.py)
        terms = await _life_cycle_terms(session, view, terms, req, clock.today())
    amounts = domain.validate_charge(terms, approval, int(used), req, clock.today(), price_lists,
                                     money_used_cents=int(money_used))
    now = clock.now()
    charge = Charge(
        id=new_id(), voucher_id=voucher_id, funder_id=terms.funder_id, provider_id=req.provider_id,
        category=category, provider_reference=provider_reference, service_date=req.service_date,
        units_x100=req.units_x100, unit_price_cents=amounts.unit_price_cents, amount_cents=amounts.amount_cents,
        own_share_cents=amounts.own_share_cents, tariff=req.tariff, price_registered=amounts.price_registered,
        registered_price_cents=amounts.registered_price_cents, price_list_id=amounts.price_list_id,
        client_fee_cents=amounts.client_fee_cents, status=domain.ACCEPTED, accepted_at=now,
    )
    session.add(charge)
    await session.flush()
    await post(session, "charge", charge.id,
               domain.charge_postings(charge.funder_id, charge.provider_id, charge.amount_cents), now)
    await add_event(session, ChargeAccepted(
        charge_id=charge.id, voucher_id=voucher_id, funder_id=charge.funder_id, provider_id=charge.provider_id,
        category=charge.category, service_date=charge.service_date, units=from_hundredths(charge.units_x100),
        unit_price_cents=charge.unit_price_cents, amount_cents=charge.amount_cents,
        own_share_cents=charge.own_share_cents, accepted_at=now, tariff=charge.tariff,
        price_registered=charge.price_registered, registered_price_cents=charge.registered_price_cents,
        price_list_id=charge.price_list_id, client_fee_cents=charge.client_fee_cents), SOURCE)
    return charge, True


async def settle_now(sessions: Sessions, clock: Clock, principal: Principal,
                     default_fee_rate: Decimal) -> list[Settlement]:
    """Settle all accepted charges now, each funder's at its contract's fee rate."""
    async with unit_of_work(sessions) as session:
        made = await run_settlement(session, clock, default_fee_rate)
        for s in made:
            await audit.record(session, principal, "settlement.create", "settlement", s.id, s.funder_id)
    return made


async def fee_rates(session: AsyncSession, funder_ids: set[str]) -> dict[str, str]:
    """The funders' fee rates as payments knows them from ``FunderRegistered``."""
    if not funder_ids:
        return {}
    rows = await session.execute(select(FunderView.funder_id, FunderView.operator_fee_rate).where(
        FunderView.funder_id.in_(funder_ids)))
    return {funder_id: rate for funder_id, rate in rows.all()}


async def run_settlement(session: AsyncSession, clock: Clock, default_fee_rate: Decimal) -> list[Settlement]:
    """Settle every accepted, unsettled charge: one settlement per provider and funder, the fee at the
    funder's contract rate (``default_fee_rate`` for a funder payments does not know)."""
    q = (select(Charge.id, Charge.funder_id, Charge.provider_id, Charge.voucher_id, Charge.category,
                Charge.amount_cents)
         .where(Charge.status == domain.ACCEPTED, Charge.settlement_id.is_(None))
         .order_by(Charge.funder_id, Charge.provider_id, Charge.accepted_at, Charge.id)
         .with_for_update(skip_locked=True))
    rows = (await session.execute(q)).all()
    now = clock.now()
    known_rates = await fee_rates(session, {r.funder_id for r in rows})
    settlements: list[Settlement] = []
    for (funder_id, provider_id), group in groupby(rows, key=lambda r: (r.funder_id, r.provider_id)):
        charges = list(group)
        fee_rate = domain.fee_rate_for(known_rates.get(funder_id), default_fee_rate)
        figures = domain.settle([c.amount_cents for c in charges], fee_rate)
        settlement = Settlement(
            id=new_id(), funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
            gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
            fee_rate=str(fee_rate), created_at=now)
        session.add(settlement)
        await session.flush()
        await session.execute(
            update(Charge.__table__).where(Charge.__table__.c.id == bindparam("cid")).values(
                status=domain.SETTLED, settlement_id=settlement.id, fee_cents=bindparam("fee"),
                net_cents=bindparam("net")),
            [{"cid": c.id, "fee": fee, "net": c.amount_cents - fee} for c, fee in zip(charges, figures.charge_fees)],
        )
        await post(session, "settlement", settlement.id, domain.settlement_postings(provider_id, figures), now)
        await add_event(session, SettlementCreated(
            settlement_id=settlement.id, funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
            gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
            fee_rate=fee_rate, created_at=now), SOURCE)
        await add_events(session, [ChargeSettled(
            charge_id=c.id, settlement_id=settlement.id, voucher_id=c.voucher_id, funder_id=funder_id,
            provider_id=provider_id, category=c.category, gross_cents=c.amount_cents, fee_cents=fee,
            net_cents=c.amount_cents - fee, settled_at=now) for c, fee in zip(charges, figures.charge_fees)], SOURCE)
        settlements.append(settlement)
        log.info("settlement.created", settlement_id=settlement.id, provider_id=provider_id, funder_id=funder_id,
                 charges=len(charges), gross_cents=figures.gross_cents, fee_cents=figures.fee_cents)
    return settlements


async def ledger_check(session: AsyncSession) -> dict:
    """The ledger's invariants on the live database."""
    entries_total = (await session.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)))).scalar_one()
    unbalanced = (await session.execute(
        select(LedgerEntry.transaction_id).group_by(LedgerEntry.transaction_id)
        .having(func.sum(LedgerEntry.amount_cents) != 0))).scalars().all()
    settled = (await session.execute(select(
        func.coalesce(func.sum(Settlement.gross_cents), 0), func.coalesce(func.sum(Settlement.fee_cents), 0),
        func.coalesce(func.sum(Settlement.net_cents), 0)))).one()
    settled_charges = (await session.execute(select(
        func.coalesce(func.sum(Charge.amount_cents), 0), func.coalesce(func.sum(Charge.fee_cents), 0)).where(
        Charge.status == domain.SETTLED))).one()
    checks = {
        "entries_sum_to_zero": entries_total == 0,
        "every_transaction_balanced": not unbalanced,
        "settled_equals_charges_minus_fees": settled[0] == settled_charges[0] and settled[1] == settled_charges[1]
        and settled[2] == settled[0] - settled[1],
    }
    return {"ok": all(checks.values()), "checks": checks, "unbalanced_transactions": list(unbalanced)[:20]}


async def balances(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents))
                                  .group_by(LedgerEntry.account).order_by(LedgerEntry.account))).all()
    return {account: int(total) for account, total in rows}


# ------------------------------------------------------------------ reads, each caller its own tenant's
@dataclass(frozen=True)
class ChargeFilter:
    voucher_id: str | None = None
    status: str | None = None
    service_date_from: date | None = None
    service_date_to: date | None = None
    funder_id: str | None = None
    provider_id: str | None = None


async def charges_page(sessions: Sessions, scope: TenantScope, f: ChargeFilter,
                       page: PageParams) -> tuple[list[Charge], str | None]:
    """The caller's tenant's charges in the order they were accepted."""
    q = scope.restrict(select(Charge), funder=Charge.funder_id, provider=Charge.provider_id)
    for column, value in ((Charge.voucher_id, f.voucher_id), (Charge.status, f.status),
                          (Charge.funder_id, f.funder_id), (Charge.provider_id, f.provider_id)):
        if value is not None:
            q = q.where(column == value)
    if f.service_date_from is not None:
        q = q.where(Charge.service_date >= f.service_date_from)
    if f.service_date_to is not None:
        q = q.where(Charge.service_date <= f.service_date_to)
    async with sessions() as session:
        return await paginate(session, q, [Charge.accepted_at, Charge.id], page)


async def settlements_page(sessions: Sessions, scope: TenantScope, page: PageParams, *,
                           funder_id: str | None = None,
                           provider_id: str | None = None) -> tuple[list[Settlement], str | None]:
    """The caller's tenant's settlements in the order they were made."""
    q = scope.restrict(select(Settlement), funder=Settlement.funder_id, provider=Settlement.provider_id)
    if funder_id is not None:
        q = q.where(Settlement.funder_id == funder_id)
    if provider_id is not None:
        q = q.where(Settlement.provider_id == provider_id)
    async with sessions() as session:
        return await paginate(session, q, [Settlement.created_at, Settlement.id], page)


async def get_charge(sessions: Sessions, charge_id: str) -> Charge:
    async with sessions() as session:
        charge = await session.get(Charge, charge_id)
    if charge is None:
        raise NotFound("charge")
    return charge


async def get_settlement(sessions: Sessions, settlement_id: str) -> tuple[Settlement, list[Charge]]:
    async with sessions() as session:
        s = await session.get(Settlement, settlement_id)
        if s is None:
            raise NotFound("settlement")
        charges = (await session.execute(select(Charge).where(Charge.settlement_id == s.id)
                                         .order_by(Charge.id))).scalars().all()
    return s, list(charges)
