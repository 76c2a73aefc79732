"""Recovery claims: corrections of a provider's settled charges with one funder that no payout offset are
claimed back from the provider (the daily run after ``recovery_after_days``, ``claim_overdue``; or the
funder's finance staff and the operator at once, ``claim``): the provider's receivable leaves its payable for
``provider:<p>:recovery_due``, the fee is given back, the provider is sent a notice and pays the net back
with the claim's RF reference (``record_repayment``)."""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, TenantScope, ensure_visible
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.schemas import PageParams, paginate

from ..ledger.books import post
from ..ledger.postings import recovery_claim_postings, recovery_repayment_postings
from ..models import BankTransaction, ChargeCorrection, RecoveryClaim
from ..notices import notices
from ..settlement.domain import rf_reference
from .banking import RECOVERY_REPAYMENT, booked_once

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)
OVERDUE, REQUESTED = "overdue", "requested"


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
    claim_id = new_id(rf_reference)  # its RF reference, made from it, comes back on bank statements
    amount, fee = sum(c.amount_cents for c in taken), sum(c.fee_cents for c in taken)
    claim = RecoveryClaim(id=claim_id, funder_id=funder_id, provider_id=provider_id, reason=reason,
                          correction_count=len(taken), amount_cents=amount, fee_cents=fee, net_cents=amount - fee,
                          repaid_cents=0, reference=rf_reference(claim_id),
                          due_on=clock.today() + timedelta(days=payment_days), created_at=now)
    session.add(claim)
    for c in taken:
        c.recovery_claim_id = claim_id
        session.add(c)
    await session.flush()
    await post(session, "recovery_claim", claim_id,
               recovery_claim_postings(provider_id, amount, fee, amount - fee), now)
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
                       recovery_repayment_postings(found.provider_id, amount_cents), now)
            await audit.record(session, principal, "recovery_claim.repay", "recovery_claim", claim_id, found.funder_id)
        return line

    async with sessions() as session:
        found = await session.get(RecoveryClaim, claim_id)
    if found is None:
        raise NotFound("recovery_claim")
    return await booked_once(sessions, RECOVERY_REPAYMENT, bank_reference,
                              (amount_cents, booked_on, found.funder_id, claim_id), record)
