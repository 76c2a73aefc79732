"""Settlement runs: each one transaction that settles the providers' accepted charges per funder, holds
back small payouts (``domain.decide_payout``), posts to the ledger, records the run, its payouts
(RF reference, payee), the providers' notices and the events in the outbox, and its audit entries.
Time comes from the ``Clock`` passed in; the daily run from the service's scheduler (``app.jobs``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit, progress
from seteli_shared.auth import Principal, Role
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.events import SettlementCreated
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.outbox import add_event
from seteli_shared.schedule import daily

from ..bank import recovery
from ..ledger.books import post
from ..ledger.postings import settlement_postings
from ..models import SOURCE, FunderView, Payout, ProviderView, Settlement, SettlementRun
from ..notices import notices
from . import domain as settlement
from . import banking_days, offsets
from .figures import fee_rate_for, settle as settle_charges, settle_gross, with_corrections
from .batch import Charges, SettlementBatch

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)
#: the scheduler and ``seteli-payments settle`` act as this principal in the audit trail
JOB = Principal("job:payments.settle", frozenset({Role.OPERATOR}))


async def fee_rates(session: AsyncSession, funder_ids: set[str]) -> dict[str, str]:
    """The funders' fee rates as payments knows them from ``FunderRegistered``."""
    if not funder_ids:
        return {}
    rows = await session.execute(select(FunderView.funder_id, FunderView.operator_fee_rate).where(
        FunderView.funder_id.in_(funder_ids)))
    return {funder_id: rate for funder_id, rate in rows.all()}


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
    async with progress.track(sessions, "settlement_run"), unit_of_work(sessions) as session:
        result = await settle(session, clock, settings.operator_fee_rate, rules_of(settings), hold_back=hold_back,
                              banking=banking_days.calendar(settings.bank_holiday_countries),
                              settled_events=settings.settled_events,
                              settled_event_charges=settings.settled_event_charges)
        if hold_back and settings.recovery_after_days:
            result.claims = await recovery.claim_overdue(session, clock, principal, settings.recovery_after_days,
                                                        settings.recovery_payment_days, settings.payer_iban)
        await audit.record(session, principal, "settlement_run.create", "settlement_run", result.run.id, None)
        for s in result.settlements:
            await audit.record(session, principal, "settlement.create", "settlement", s.id, s.funder_id)
    log.info("settlement_run.done", run_id=result.run.id, kind=result.run.kind, settlements=len(result.settlements),
             held_back=len(result.held_back), net_cents=result.run.net_cents, recovery_claims=len(result.claims))
    return result


async def settle(session: AsyncSession, clock: Clock, default_fee_rate: Decimal, rules: settlement.PayoutRules,
                 *, hold_back: bool, banking: banking_days.BankingCalendar | None = None,
                 settled_events: str = "v2", settled_event_charges: int = 1000) -> RunResult:
    now, today = clock.now(), clock.today()
    execution_of = (banking or banking_days.calendar()).next_banking_day
    run = SettlementRun(id=new_id(settlement.bank_id), kind=settlement.DAILY if hold_back else settlement.MANUAL,
                        run_date=today,
                        created_at=now, settlement_count=0, gross_cents=0, fee_cents=0, net_cents=0, held_back_count=0)
    result = RunResult(run)
    async with SettlementBatch(session, now, events=settled_events, per_event=settled_event_charges) as batch:
        await progress.set_total(await batch.count())  # charges to settle (GET /jobs/{id})
        known_rates = await fee_rates(session, await batch.funders())
        payees: dict[str, ProviderView] | None = None
        # corrections of earlier settlements, offset against each provider's payout from the funder
        pending = await offsets.pending(session)
        async for funder_id, provider_id, charges in batch.groups():
            if payees is None:
                payees = {p.provider_id: p for p in (await session.execute(select(ProviderView))).scalars()}
            fee_rate = fee_rate_for(known_rates.get(funder_id), default_fee_rate)
            # the charges' fee spread over them here (``Charges``) or by the batch in the database (``Totals``)
            of_charges = (settle_charges(list(charges.amounts), fee_rate) if isinstance(charges, Charges)
                          else settle_gross(charges.gross, fee_rate))
            offset = with_corrections(of_charges, pending.get((funder_id, provider_id), []))
            figures = offset.figures
            # a charge's deadline only grows with its acceptance: the group's earliest charge is the one due first
            decision = settlement.decide_payout(figures.net_cents, (utc(charges.earliest),), today,
                                                rules, hold_back=hold_back, execution_of=execution_of)
            await progress.advance(len(charges))
            if not decision.pay:
                result.held_back.append((funder_id, provider_id, figures.net_cents))
                continue
            s = Settlement(id=new_id(settlement.bank_texts), funder_id=funder_id, provider_id=provider_id,
                           charge_count=len(charges),
                           gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                           fee_rate=str(fee_rate), created_at=now, correction_count=len(offset.offset))
            session.add(s)
            await session.flush()
            await post(session, "settlement", s.id, settlement_postings(provider_id, figures), now)
            await offsets.mark_offset(session, s.id, offset.offset)
            payee = payees.get(provider_id)
            payout = Payout(settlement_id=s.id, run_id=run.id, reason=decision.reason,
                            reference=settlement.settlement_reference(s.id), payee_name=payee.name if payee else None,
                            iban=payee.iban if payee else None, bic=payee.bic if payee else None)
            session.add(payout)
            await add_event(session, SettlementCreated(
                settlement_id=s.id, funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
                gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                fee_rate=fee_rate, created_at=now), SOURCE)
            await batch.settled(s.id, funder_id, provider_id, charges,
                                of_charges.charge_fees if isinstance(charges, Charges) else of_charges.fee_cents)
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


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at



# ------------------------------------------------------------------ the daily scheduler
async def scheduler(sessions: Sessions, clock: Clock, settings) -> None:  # noqa: ANN001
    """Run the daily settlement every day of the year at ``settlement_daily_at`` (UTC); a failed run is
    logged and the next day's goes on (the guarantee's margin leaves room for it)."""
    await daily("payments.settle", settings.settlement_daily_at, clock,
                lambda: run_settlements(sessions, clock, JOB, settings, hold_back=True))
