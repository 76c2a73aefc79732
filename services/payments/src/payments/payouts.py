"""Settlement runs: each one transaction that settles the providers' accepted charges per funder, holds
back small payouts (``settlement.decide_payout``), posts to the ledger, records the run, its payouts
(RF reference, payee), the providers' notices and the events in the outbox, and its audit entries.
Time comes from the ``Clock`` passed in. Also the reads built on runs: the at-risk list, statements,
payment files and the provider projection's handlers."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, Role
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import Envelope, ProviderRegistered, ProviderUpdated, SettlementCreated
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.outbox import add_event
from seteli_shared.schedule import daily
from seteli_shared.schemas import PageParams, paginate

from . import banking, corrections, domain, notices, pain001, settlement
from .models import Charge, ChargeCorrection, Payout, ProviderView, Settlement, SettlementRun
from .usecases import SOURCE, SettlementBatch, fee_rates, post

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)
#: the scheduler and ``seteli-payments settle`` act as this principal in the audit trail
JOB = Principal("job:payments.settle", frozenset({Role.OPERATOR}))


def rules_of(settings) -> settlement.PayoutRules:  # noqa: ANN001
    return settlement.PayoutRules(settings.min_payout_cents, settings.settlement_guarantee_days,
                                  settings.settlement_guarantee_margin_days)


@dataclass
class RunResult:
    run: SettlementRun
    settlements: list[Settlement] = field(default_factory=list)
    payouts: list[Payout] = field(default_factory=list)
    #: (funder, provider, net cents) of the payouts that wait for a later run
    held_back: list[tuple[str, str, int]] = field(default_factory=list)
    #: corrections no payout offset in time, claimed back from their providers (the daily run)
    claims: list = field(default_factory=list)


async def run_settlements(sessions: Sessions, clock: Clock, principal: Principal, settings,  # noqa: ANN001
                          *, hold_back: bool = True) -> RunResult:
    """A settlement run in one transaction. ``hold_back`` (the daily run) lets payouts under the minimum
    wait unless the guarantee is due; without it (an operator's run) everything accepted is settled."""
    async with unit_of_work(sessions) as session:
        result = await settle(session, clock, settings.operator_fee_rate, rules_of(settings), hold_back=hold_back)
        if hold_back and settings.recovery_after_days:
            result.claims = await banking.claim_overdue(session, clock, principal, settings.recovery_after_days,
                                                        settings.recovery_payment_days, settings.payer_iban)
        await audit.record(session, principal, "settlement_run.create", "settlement_run", result.run.id, None)
        for s in result.settlements:
            await audit.record(session, principal, "settlement.create", "settlement", s.id, s.funder_id)
    log.info("settlement_run.done", run_id=result.run.id, kind=result.run.kind, settlements=len(result.settlements),
             held_back=len(result.held_back), net_cents=result.run.net_cents, recovery_claims=len(result.claims))
    return result


async def settle(session: AsyncSession, clock: Clock, default_fee_rate: Decimal, rules: settlement.PayoutRules,
                 *, hold_back: bool) -> RunResult:
    now, today = clock.now(), clock.today()
    run = SettlementRun(id=new_id(settlement.bank_id), kind=settlement.DAILY if hold_back else settlement.MANUAL,
                        run_date=today,
                        created_at=now, settlement_count=0, gross_cents=0, fee_cents=0, net_cents=0, held_back_count=0)
    result = RunResult(run)
    async with SettlementBatch(session, now) as batch:
        known_rates = await fee_rates(session, await batch.funders())
        payees: dict[str, ProviderView] | None = None
        # corrections of earlier settlements, offset against each provider's payout from the funder
        pending = await corrections.pending(session)
        async for funder_id, provider_id, charges in batch.groups():
            if payees is None:
                payees = {p.provider_id: p for p in (await session.execute(select(ProviderView))).scalars()}
            fee_rate = domain.fee_rate_for(known_rates.get(funder_id), default_fee_rate)
            offset = domain.settle_with_corrections([c.amount_cents for c in charges], fee_rate,
                                                    pending.get((funder_id, provider_id), []))
            figures = offset.figures
            decision = settlement.decide_payout(figures.net_cents, [_utc(c.accepted_at) for c in charges], today,
                                                rules, hold_back=hold_back)
            if not decision.pay:
                result.held_back.append((funder_id, provider_id, figures.net_cents))
                continue
            s = Settlement(id=new_id(settlement.bank_texts), funder_id=funder_id, provider_id=provider_id,
                           charge_count=len(charges),
                           gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                           fee_rate=str(fee_rate), created_at=now, correction_count=len(offset.offset))
            session.add(s)
            await session.flush()
            await post(session, "settlement", s.id, domain.settlement_postings(provider_id, figures), now)
            await corrections.mark_offset(session, s.id, offset.offset)
            payee = payees.get(provider_id)
            payout = Payout(settlement_id=s.id, run_id=run.id, reason=decision.reason,
                            reference=settlement.settlement_reference(s.id), payee_name=payee.name if payee else None,
                            iban=payee.iban if payee else None, bic=payee.bic if payee else None)
            session.add(payout)
            await add_event(session, SettlementCreated(
                settlement_id=s.id, funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
                gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                fee_rate=fee_rate, created_at=now), SOURCE)
            await batch.settled(s.id, funder_id, provider_id, charges, figures.charge_fees)
            await notices.send_notice(session, notices.SettlementNotice(
                settlement_id=s.id, run_id=run.id, provider_id=provider_id, funder_id=funder_id,
                charge_count=len(charges), gross_cents=figures.gross_cents, fee_cents=figures.fee_cents,
                net_cents=figures.net_cents, fee_rate=fee_rate, reference=payout.reference,
                payout_reason=decision.reason, created_at=now, statement_path=f"/settlements/{s.id}/statement",
                correction_count=len(offset.offset)), now)
            result.settlements.append(s)
            result.payouts.append(payout)
            run.gross_cents += figures.gross_cents
            run.fee_cents += figures.fee_cents
            run.net_cents += figures.net_cents
    run.settlement_count, run.held_back_count = len(result.settlements), len(result.held_back)
    session.add(run)
    await session.flush()
    return result


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


# ------------------------------------------------------------------ reads
@dataclass(frozen=True)
class AtRiskCharge:
    charge: Charge
    risk: settlement.AtRisk


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
    found = [(c, settlement.at_risk(c.id, _utc(c.accepted_at), today, rules, settings.settlement_at_risk_days))
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
        offset = await corrections.offset_in(session, s.id)
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
    payments = [pain001.CreditTransfer(end_to_end_id=settlement.bank_id(s.id), amount_cents=s.net_cents,
                                       creditor_name=p.payee_name, creditor_iban=p.iban, creditor_bic=p.bic,
                                       reference=p.reference) for p, s in rows
                if s.net_cents > 0]  # corrections may bring a payout to nothing: no transfer of 0.00
    if not payments:
        # pain.001 needs at least one transfer: a run that pays nothing has no file for the bank
        raise Conflict("nothing_to_pay", "the run transfers no money: there is no payment file for the bank",
                       settlements=len(rows))
    debtor = pain001.Debtor(settings.payer_name, settings.payer_iban, settings.payer_bic)
    return pain001.build(settlement.bank_id(run.id), run.created_at, run.run_date, debtor, payments)


# ------------------------------------------------------------------ the provider projection
async def _provider(session: AsyncSession, provider_id: str, at: datetime, *, name: str | None,
                    iban: str | None, bic: str | None) -> None:
    view = await session.get(ProviderView, provider_id, with_for_update=True)
    if view is None:
        view = ProviderView(provider_id=provider_id, updated_at=at)
    elif _utc(view.updated_at) > _utc(at):
        return  # an older event than the one applied: nothing changes
    if name is not None:
        view.name = name
    if iban is not None:
        view.iban, view.bic = iban, bic
    view.updated_at = _utc(at)
    session.add(view)
    await session.flush()


async def on_provider_registered(session: AsyncSession, _env: Envelope, event: ProviderRegistered) -> None:
    await _provider(session, event.provider_id, event.registered_at, name=event.name, iban=event.iban, bic=event.bic)


async def on_provider_updated(session: AsyncSession, _env: Envelope, event: ProviderUpdated) -> None:
    await _provider(session, event.provider_id, event.updated_at, name=event.name, iban=event.iban, bic=event.bic)


HANDLERS = {ProviderRegistered.event_type(): on_provider_registered,
            ProviderUpdated.event_type(): on_provider_updated}


# ------------------------------------------------------------------ the daily scheduler
async def scheduler(sessions: Sessions, clock: Clock, settings) -> None:  # noqa: ANN001
    """Run the daily settlement every day of the year at ``settlement_daily_at`` (UTC); a failed run is
    logged and the next day's goes on (the guarantee's margin leaves room for it)."""
    await daily("payments.settle", settings.settlement_daily_at, clock,
                lambda: run_settlements(sessions, clock, JOB, settings, hold_back=True))
