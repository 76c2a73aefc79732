"""The bank side of the ledger: what actually moves on the operator's client-funds account.

- **Payouts executed**: the operator records that the bank executed a run's payment file
  (``execute_run``): each payout's net leaves ``provider:<p>:payout_due`` for ``operator:bank``.
- **Funders' payments**: a funder's payment booked on the account (``record_funder_payment``): the bank
  account up, what the funder owes (``funder:<f>:voucher_spend``) down.
- **Recovery claims** (``recovery``): corrections no payout offset, claimed back from the provider and
  repaid to the operator's account.

Each is one transaction with its ledger transaction and audit entry. A bank statement line recorded
twice (the same ``bank_reference``) is recorded once: the same figures answer the first record again,
other figures are refused (``bank_reference_used``)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.schemas import PageParams, paginate

from ..ledger.books import post
from ..ledger.postings import funder_account as funder_account_name
from ..ledger.postings import funder_payment_postings, payout_executed_postings
from ..models import (BankTransaction, FunderView, LedgerEntry, LedgerTransaction, Payout, Settlement, SettlementRun,
                      VoucherView)

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)

FUNDER_PAYMENT, PAYOUT, RECOVERY_REPAYMENT = "funder_payment", "payout", "recovery_repayment"


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
            await post(session, "payout", s.id, payout_executed_postings(s.provider_id, s.net_cents), now)
        run.executed_on, run.executed_at = executed_on, now
        session.add(run)
        await audit.record(session, principal, "settlement_run.execute", "settlement_run", run_id, None)
    log.info("settlement_run.executed", run_id=run_id, transfers=len(rows), net_cents=total)
    return Execution(run, len(rows), total, repeated=False)


# ------------------------------------------------------------------ money coming in
async def booked_once(sessions: Sessions, kind: str, bank_reference: str, same: tuple,
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
            await post(session, "funder_payment", line.id, funder_payment_postings(funder_id, amount_cents), now)
            await audit.record(session, principal, "funder_payment.record", "bank_transaction", line.id, funder_id)
        log.info("funder_payment.recorded", funder_id=funder_id, amount_cents=amount_cents)
        return line

    return await booked_once(sessions, FUNDER_PAYMENT, bank_reference, (amount_cents, booked_on, funder_id, None),
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
    account = funder_account_name(funder_id)
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
