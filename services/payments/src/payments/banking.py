"""The bank side of the ledger: what actually moves on the operator's client-funds account.

- **Payouts executed**: the operator records that the bank executed a run's payment file
  (``execute_run``): each payout's net leaves ``provider:<p>:payout_due`` for ``operator:bank``.
- **Funders' payments**: a funder's payment booked on the account (``record_funder_payment``): the bank
  account up, what the funder owes (``funder:<f>:voucher_spend``) down.
- **Recovery claims**: a correction of a settled charge is normally taken off the provider's next payout
  from the funder. When none comes (the provider stopped charging the funder), the daily settlement run
  claims the corrections back after ``recovery_after_days`` (``claim_overdue``), or the funder's finance
  staff or the operator do it at once (``claim``): the provider's receivable leaves its payable for
  ``provider:<p>:recovery_due``, the fee is given back, the provider is sent a notice (its queue and
  webhook, as settlement notices go) and pays the net to the operator's account with the claim's RF
  reference (``record_repayment``).

Each is one transaction with its ledger transaction and audit entry. A bank statement line recorded
twice (the same ``bank_reference``) is recorded once: the same figures answer the first record again,
other figures are refused (``bank_reference_used``)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, TenantScope, ensure_visible
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.schemas import PageParams, paginate

from . import domain, notices, settlement
from .models import (BankTransaction, ChargeCorrection, FunderView, LedgerEntry, LedgerTransaction, Payout,
                     RecoveryClaim, Settlement, SettlementRun, VoucherView)
from .usecases import post

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)

FUNDER_PAYMENT, PAYOUT, RECOVERY_REPAYMENT = "funder_payment", "payout", "recovery_repayment"
OVERDUE, REQUESTED = "overdue", "requested"


# ------------------------------------------------------------------ payouts executed by the bank
@dataclass(frozen=True)
class Execution:
    run: SettlementRun
    transfers: int
    net_cents: int
    repeated: bool


async def execute_run(sessions: Sessions, clock: Clock, principal: Principal, run_id: str,
                      executed_on: date) -> Execution:
    """Record that the bank executed the run's payment file on ``executed_on``. Once per run: recording it
    again answers the first record (``repeated``); refused for a run that transfers nothing
    (``nothing_to_pay``) or a day before the run (``executed_before_run``)."""
    async with unit_of_work(sessions) as session:
        run = await session.get(SettlementRun, run_id, with_for_update=True)
        if run is None:
            raise NotFound("settlement_run")
        rows = (await session.execute(select(Payout, Settlement).join(Settlement, Settlement.id == Payout.settlement_id)
                                      .where(Payout.run_id == run_id, Settlement.net_cents > 0)
                                      .order_by(Settlement.id))).all()
        total = sum(s.net_cents for _, s in rows)
        if run.executed_at is not None:
            return Execution(run, len(rows), total, repeated=True)
        if not rows:
            raise Conflict("nothing_to_pay", "the run transfers no money: there is nothing for the bank to execute")
        if executed_on < run.run_date:
            raise DomainError("executed_before_run", "the bank cannot have executed the file before the run",
                              run_date=run.run_date.isoformat())
        now = clock.now()
        for payout, s in rows:
            session.add(BankTransaction(id=new_id(), kind=PAYOUT, bank_reference=payout.reference,
                                        amount_cents=-s.net_cents, booked_on=executed_on, funder_id=s.funder_id,
                                        provider_id=s.provider_id, run_id=run_id, created_at=now))
            await post(session, "payout", s.id, domain.payout_executed_postings(s.provider_id, s.net_cents), now)
        run.executed_on, run.executed_at = executed_on, now
        session.add(run)
        await audit.record(session, principal, "settlement_run.execute", "settlement_run", run_id, None)
    log.info("settlement_run.executed", run_id=run_id, transfers=len(rows), net_cents=total)
    return Execution(run, len(rows), total, repeated=False)


# ------------------------------------------------------------------ money coming in
async def _booked_once(sessions: Sessions, kind: str, bank_reference: str, same: tuple,
                       record) -> tuple[BankTransaction, bool]:  # noqa: ANN001
    """Run ``record`` (which books the line) unless the bank reference is booked already: then answer that
    line if its figures are ``same``, else refuse. A concurrent twin loses on the unique key and answers the
    same way."""
    for _ in range(2):
        async with sessions() as session:
            earlier = (await session.execute(select(BankTransaction).where(
                BankTransaction.kind == kind, BankTransaction.bank_reference == bank_reference))).scalar_one_or_none()
        if earlier is not None:
            if (earlier.amount_cents, earlier.booked_on, earlier.funder_id, earlier.claim_id) != same:
                raise Conflict("bank_reference_used", "this bank reference is recorded already with other figures",
                               bank_transaction_id=earlier.id)
            return earlier, True
        try:
            return await record(), False
        except IntegrityError:
            continue  # a twin committed first: answer it
    raise Conflict("bank_reference_used", "this bank reference is being recorded")  # pragma: no cover


async def record_funder_payment(sessions: Sessions, clock: Clock, principal: Principal, funder_id: str,
                                amount_cents: int, booked_on: date, bank_reference: str
                                ) -> tuple[BankTransaction, bool]:
    """A funder's payment booked on the operator's account. Answers the line and whether it was recorded
    before. A funder payments has never heard of (no ``FunderRegistered``, no voucher) is
    ``funder_not_found``: a mistyped id would otherwise book money on an account nobody reads."""
    async with sessions() as session:
        known = (await session.get(FunderView, funder_id)) is not None or (await session.execute(
            select(VoucherView.voucher_id).where(VoucherView.funder_id == funder_id).limit(1))).first() is not None
    if not known:
        raise NotFound("funder", funder_id=funder_id)

    async def record() -> BankTransaction:
        async with unit_of_work(sessions) as session:
            now = clock.now()
            line = BankTransaction(id=new_id(), kind=FUNDER_PAYMENT, bank_reference=bank_reference,
                                   amount_cents=amount_cents, booked_on=booked_on, funder_id=funder_id, created_at=now)
            session.add(line)
            await session.flush()
            await post(session, "funder_payment", line.id, domain.funder_payment_postings(funder_id, amount_cents), now)
            await audit.record(session, principal, "funder_payment.record", "bank_transaction", line.id, funder_id)
        log.info("funder_payment.recorded", funder_id=funder_id, amount_cents=amount_cents)
        return line

    return await _booked_once(sessions, FUNDER_PAYMENT, bank_reference, (amount_cents, booked_on, funder_id, None),
                              record)


@dataclass(frozen=True)
class FunderAccount:
    funder_id: str
    charged_cents: int
    corrected_cents: int
    paid_cents: int

    @property
    def outstanding_cents(self) -> int:
        return self.charged_cents - self.corrected_cents - self.paid_cents


async def funder_account(sessions: Sessions, funder_id: str) -> FunderAccount:
    """What the funder owes from the ledger: its accepted charges, less corrections, less its payments."""
    account = domain.funder_account(funder_id)
    async with sessions() as session:
        rows = dict((await session.execute(
            select(LedgerTransaction.kind, func.sum(LedgerEntry.amount_cents))
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account == account).group_by(LedgerTransaction.kind))).all())
    return FunderAccount(funder_id, int(rows.get("charge") or 0), -int(rows.get("charge_correction") or 0),
                         -int(rows.get("funder_payment") or 0))


async def funder_payments(sessions: Sessions, funder_id: str, page: PageParams) -> tuple[list[BankTransaction], str | None]:
    q = select(BankTransaction).where(BankTransaction.kind == FUNDER_PAYMENT, BankTransaction.funder_id == funder_id)
    async with sessions() as session:
        return await paginate(session, q, [BankTransaction.booked_on, BankTransaction.id], page)


# ------------------------------------------------------------------ recovery claims
def _pending_of(funder_id: str | None, provider_id: str | None, older_than=None):  # noqa: ANN001, ANN202
    k = ChargeCorrection
    q = select(k).where(k.offset_settlement_id.is_(None), k.recovery_claim_id.is_(None))
    if funder_id is not None:
        q = q.where(k.funder_id == funder_id)
    if provider_id is not None:
        q = q.where(k.provider_id == provider_id)
    if older_than is not None:
        q = q.where(k.created_at <= older_than)
    return q.order_by(k.funder_id, k.provider_id, k.created_at, k.id)


async def _claim(session: AsyncSession, clock: Clock, principal: Principal, funder_id: str, provider_id: str,
                 taken: list[ChargeCorrection], reason: str, payment_days: int, pay_to_iban: str) -> RecoveryClaim:
    now = clock.now()
    claim_id = new_id(settlement.rf_reference)  # its RF reference, made from it, comes back on bank statements
    amount, fee = sum(c.amount_cents for c in taken), sum(c.fee_cents for c in taken)
    claim = RecoveryClaim(id=claim_id, funder_id=funder_id, provider_id=provider_id, reason=reason,
                          correction_count=len(taken), amount_cents=amount, fee_cents=fee, net_cents=amount - fee,
                          repaid_cents=0, reference=settlement.rf_reference(claim_id),
                          due_on=clock.today() + timedelta(days=payment_days), created_at=now)
    session.add(claim)
    for c in taken:
        c.recovery_claim_id = claim_id
        session.add(c)
    await session.flush()
    await post(session, "recovery_claim", claim_id,
               domain.recovery_claim_postings(provider_id, amount, fee, amount - fee), now)
    await notices.send_notice(session, notices.RecoveryClaimNotice(
        claim_id=claim_id, provider_id=provider_id, funder_id=funder_id, reason=reason, correction_count=len(taken),
        amount_cents=amount, fee_cents=fee, net_cents=amount - fee, reference=claim.reference,
        pay_to_iban=pay_to_iban, due_on=claim.due_on, created_at=now, claim_path=f"/recovery-claims/{claim_id}"), now)
    await audit.record(session, principal, "recovery_claim.create", "recovery_claim", claim_id, funder_id)
    log.info("recovery_claim.created", claim_id=claim_id, funder_id=funder_id, provider_id=provider_id,
             reason=reason, corrections=len(taken), net_cents=amount - fee)
    return claim


async def claim(sessions: Sessions, clock: Clock, principal: Principal, funder_id: str, provider_id: str,
                payment_days: int, pay_to_iban: str) -> RecoveryClaim:
    """Claim back now every correction of the provider's charges to the funder that no settlement has
    offset (``nothing_to_recover`` when there is none)."""
    async with unit_of_work(sessions) as session:
        taken = list((await session.execute(_pending_of(funder_id, provider_id).with_for_update())).scalars())
        if not taken:
            raise Conflict("nothing_to_recover", "the provider has no correction with this funder waiting to be "
                           "offset")
        return await _claim(session, clock, principal, funder_id, provider_id, taken, REQUESTED, payment_days,
                            pay_to_iban)


async def claim_overdue(session: AsyncSession, clock: Clock, principal: Principal, after_days: int,
                        payment_days: int, pay_to_iban: str) -> list[RecoveryClaim]:
    """In the daily run's transaction (after its settlements took what they could): the corrections still
    waiting ``after_days`` after they were made are claimed back, one claim per funder and provider. Rows a
    concurrent transaction holds are left for the next run."""
    cutoff = clock.now() - timedelta(days=after_days)
    rows = list((await session.execute(_pending_of(None, None, cutoff).with_for_update(skip_locked=True))).scalars())
    groups: dict[tuple[str, str], list[ChargeCorrection]] = {}
    for c in rows:
        groups.setdefault((c.funder_id, c.provider_id), []).append(c)
    return [await _claim(session, clock, principal, f, p, taken, OVERDUE, payment_days, pay_to_iban)
            for (f, p), taken in sorted(groups.items())]


async def claims_page(sessions: Sessions, scope: TenantScope, page: PageParams, *, open_only: bool
                      ) -> tuple[list[RecoveryClaim], str | None]:
    """The claims the caller may see: all (operator), its funder's, or its provider's."""
    q = scope.restrict(select(RecoveryClaim), funder=RecoveryClaim.funder_id, provider=RecoveryClaim.provider_id)
    if open_only:
        q = q.where(RecoveryClaim.repaid_cents < RecoveryClaim.net_cents)
    async with sessions() as session:
        return await paginate(session, q, [RecoveryClaim.created_at, RecoveryClaim.id], page)


async def claim_of(sessions: Sessions, principal: Principal, claim_id: str) -> tuple[RecoveryClaim,
                                                                                     list[ChargeCorrection]]:
    async with sessions() as session:
        found = await session.get(RecoveryClaim, claim_id)
        if found is None:
            raise NotFound("recovery_claim")
        ensure_visible(principal, "recovery_claim", funder_id=found.funder_id, provider_id=found.provider_id)
        taken = list((await session.execute(select(ChargeCorrection).where(
            ChargeCorrection.recovery_claim_id == claim_id).order_by(ChargeCorrection.created_at,
                                                                      ChargeCorrection.id))).scalars())
    return found, taken


async def record_repayment(sessions: Sessions, clock: Clock, principal: Principal, claim_id: str,
                           amount_cents: int, booked_on: date, bank_reference: str) -> tuple[BankTransaction, bool]:
    """A provider's repayment of a claim booked on the operator's account (in part or in full; never more
    than is still owed: ``repayment_exceeds_claim``)."""
    async def record() -> BankTransaction:
        async with unit_of_work(sessions) as session:
            found = await session.get(RecoveryClaim, claim_id, with_for_update=True)
            if found is None:
                raise NotFound("recovery_claim")
            left = found.net_cents - found.repaid_cents
            if amount_cents > left:
                raise DomainError("repayment_exceeds_claim", "the repayment is more than the claim still owed",
                                  outstanding_cents=left)
            now = clock.now()
            line = BankTransaction(id=new_id(), kind=RECOVERY_REPAYMENT, bank_reference=bank_reference,
                                   amount_cents=amount_cents, booked_on=booked_on, funder_id=found.funder_id,
                                   provider_id=found.provider_id, claim_id=claim_id, created_at=now)
            session.add(line)
            found.repaid_cents += amount_cents
            session.add(found)
            await session.flush()
            await post(session, "recovery_repayment", line.id,
                       domain.recovery_repayment_postings(found.provider_id, amount_cents), now)
            await audit.record(session, principal, "recovery_claim.repay", "recovery_claim", claim_id, found.funder_id)
        return line

    async with sessions() as session:
        found = await session.get(RecoveryClaim, claim_id)
    if found is None:
        raise NotFound("recovery_claim")
    return await _booked_once(sessions, RECOVERY_REPAYMENT, bank_reference,
                              (amount_cents, booked_on, found.funder_id, claim_id), record)
