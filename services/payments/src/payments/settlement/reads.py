"""Settlements, runs, statements and payment files as their callers read them; the charges at risk of
missing the 14-day guarantee."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared.auth import TenantScope
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.schemas import PageParams, paginate

from ..charging import domain
from ..models import Charge, ChargeCorrection, Payout, Settlement, SettlementRun
from . import domain as payout_rules
from . import banking_days, offsets, pain001
from .runs import rules_of, utc

Sessions = async_sessionmaker[AsyncSession]


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



async def get_settlement(sessions: Sessions, settlement_id: str) -> tuple[Settlement, list[Charge]]:
    async with sessions() as session:
        s = await session.get(Settlement, settlement_id)
        if s is None:
            raise NotFound("settlement")
        charges = (await session.execute(select(Charge).where(Charge.settlement_id == s.id)
                                         .order_by(Charge.id))).scalars().all()
    return s, list(charges)


@dataclass(frozen=True)
class AtRiskCharge:
    charge: Charge
    risk: payout_rules.AtRisk


async def charges_at_risk(sessions: Sessions, clock: Clock, settings) -> list[AtRiskCharge]:  # noqa: ANN001
    """Unpaid accepted charges with at most ``settlement_at_risk_days`` left to their 14-day deadline,
    the most urgent first."""
    rules, today = rules_of(settings), clock.today()
    oldest = datetime.combine(today - timedelta(days=rules.guarantee_days - settings.settlement_at_risk_days),
                              time.max, tzinfo=timezone.utc)
    async with sessions() as session:
        rows = (await session.execute(select(Charge).where(
            Charge.status == domain.ACCEPTED, Charge.settlement_id.is_(None), Charge.accepted_at <= oldest)
            .order_by(Charge.accepted_at, Charge.id).limit(1000))).scalars().all()
    found = [(c, payout_rules.at_risk(c.id, utc(c.accepted_at), today, rules, settings.settlement_at_risk_days))
             for c in rows]
    return [AtRiskCharge(c, r) for c, r in found if r is not None]


async def runs_page(sessions: Sessions, page: PageParams) -> tuple[list[SettlementRun], str | None]:
    async with sessions() as session:
        return await paginate(session, select(SettlementRun), [SettlementRun.created_at, SettlementRun.id], page)


async def statement(sessions: Sessions, settlement_id: str
                    ) -> tuple[Settlement, list[Charge], Payout | None, list[tuple[ChargeCorrection, str]]]:
    """The settlement, its charges, its payout and the corrections of earlier settlements it offsets."""
    async with sessions() as session:
        s = await session.get(Settlement, settlement_id)
        if s is None:
            raise NotFound("settlement")
        charges = (await session.execute(select(Charge).where(Charge.settlement_id == s.id)
                                          .order_by(Charge.service_date, Charge.accepted_at, Charge.id))).scalars().all()
        payout = await session.get(Payout, s.id)
        offset = await offsets.offset_in(session, s.id)
    return s, list(charges), payout, offset


async def payment_file(sessions: Sessions, run_id: str, settings) -> bytes:  # noqa: ANN001
    """The run's ISO 20022 pain.001.001.03 credit transfers, one per settlement."""
    async with sessions() as session:
        run = await session.get(SettlementRun, run_id)
        if run is None:
            raise NotFound("settlement_run")
        rows = (await session.execute(select(Payout, Settlement).join(
            Settlement, Settlement.id == Payout.settlement_id).where(Payout.run_id == run_id)
            .order_by(Settlement.provider_id, Settlement.funder_id, Settlement.id))).all()
    payments = [pain001.CreditTransfer(end_to_end_id=payout_rules.bank_id(s.id), amount_cents=s.net_cents,
                                       creditor_name=p.payee_name, creditor_iban=p.iban, creditor_bic=p.bic,
                                       reference=p.reference) for p, s in rows
                if s.net_cents > 0]  # corrections may bring a payout to nothing: no transfer of 0.00
    if not payments:
        # pain.001 needs at least one transfer: a run that pays nothing has no file for the bank
        raise Conflict("nothing_to_pay", "the run transfers no money: there is no payment file for the bank",
                       settlements=len(rows))
    debtor = pain001.Debtor(settings.payer_name, settings.payer_iban, settings.payer_bic)
    return pain001.build(payout_rules.bank_id(run.id), run.created_at,
                         await execution_date(sessions, run, settings), debtor, payments)


async def execution_date(sessions: Sessions, run: SettlementRun, settings) -> date:  # noqa: ANN001
    """The run's requested execution date: the first banking day on or after the run's day, earlier when
    that would pay one of its charges after the guarantee's deadline (``banking_days``)."""
    async with sessions() as session:
        oldest = (await session.execute(select(func.min(Charge.accepted_at)).join(
            Payout, Payout.settlement_id == Charge.settlement_id).where(Payout.run_id == run.id))).scalar()
    deadline = rules_of(settings).deadline(utc(oldest)) if oldest is not None else None
    return banking_days.calendar(settings.bank_holiday_countries).execution_date(run.run_date, deadline)

