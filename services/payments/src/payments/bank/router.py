"""The bank side over HTTP: a run's payment file executed by the bank, funders' payments received, the
funder's account, recovery claims and their repayments. Parse, authorise, call a use case (``banking``)."""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from seteli_shared.auth import (PROVIDER_STAFF, Principal, Role, TenantScope, acting_for_funder, ensure_visible, require,
                               tenant_scope)
from seteli_shared.clock import ClockDep
from seteli_shared.events import FunderId
from seteli_shared.schemas import BigCents, BusinessDate, Page, PageDep, RequestModel
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from ..charging.schemas import CorrectionPublic
from ..common_api import FunderIdPath
from ..models import BankTransaction, RecoveryClaim
from . import banking, recovery

router = APIRouter()
#: who sees a funder's money: the operator and the funder's finance staff
FINANCE = (Role.OPERATOR, Role.FUNDER_FINANCE)
BankReference = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._/-]*$",
                                     description="the bank's archive id of the statement line (unique: the same "
                                     "line recorded again answers the first record)")]


class Execution(RequestModel):
    executed_on: BusinessDate = Field(description="the day the bank executed the payment file")


class ExecutionPublic(BaseModel):
    run_id: str
    executed_on: date
    executed_at: datetime
    transfers: int = Field(description="credit transfers the file carried (payouts above 0.00)")
    net_cents: int


@router.post("/settlement-runs/{run_id}/execution", status_code=201, response_model=ExecutionPublic,
             tags=["bank"], responses=created_or_repeated(ExecutionPublic, 404, 409, 422))
async def execute_run(
    run_id: str, body: Execution, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> JSONResponse:
    """Record that the bank executed the run's payment file: each payout leaves the providers' payout_due
    for the bank account in the ledger. Once per run (again: 200 with the first record). 409
    `nothing_to_pay` for a run without transfers; 422 `executed_before_run`."""
    done = await banking.execute_run(sessions, clock, principal, run_id, body.executed_on)
    answer = ExecutionPublic(run_id=done.run.id, executed_on=done.run.executed_on,
                             executed_at=done.run.executed_at, transfers=done.transfers, net_cents=done.net_cents)
    return JSONResponse(answer.model_dump(mode="json"), status_code=200 if done.repeated else 201)


class BankLine(RequestModel):
    amount_cents: BigCents = Field(gt=0, le=100_000_000_000, description="the amount booked, in cents")
    booked_on: BusinessDate
    bank_reference: BankReference


class BankTransactionPublic(BaseModel):
    id: str
    kind: str = Field(description="funder_payment | payout | recovery_repayment")
    bank_reference: str
    amount_cents: int
    booked_on: date
    funder_id: str | None
    claim_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, t: BankTransaction) -> "BankTransactionPublic":
        return cls(**t.model_dump(include=set(cls.model_fields)))


@router.post("/funders/{funder_id}/payments", status_code=201, response_model=BankTransactionPublic,
             tags=["bank"], responses=created_or_repeated(BankTransactionPublic, 404, 409, 422))
async def record_funder_payment(
    funder_id: FunderIdPath, body: BankLine, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> JSONResponse:
    """A funder's payment as booked on the operator's account (from the bank statement): what the funder
    owes goes down by it. The same bank reference again answers the first record (200); with other figures
    409 `bank_reference_used`. A funder payments does not know (never registered, no voucher) is 404
    `funder_not_found`."""
    line, repeated = await banking.record_funder_payment(sessions, clock, principal, funder_id, body.amount_cents,
                                                         body.booked_on, body.bank_reference)
    return JSONResponse(BankTransactionPublic.of(line).model_dump(mode="json"), status_code=200 if repeated else 201)


@router.get("/funders/{funder_id}/payments", response_model=Page[BankTransactionPublic], tags=["bank"],
            responses=error_responses(404))
async def funder_payments(
    funder_id: FunderIdPath, sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(*FINANCE)],
) -> Page[BankTransactionPublic]:
    """The funder's payments received, by the day they were booked."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    lines, cursor = await banking.funder_payments(sessions, funder_id, page)
    return Page(items=[BankTransactionPublic.of(x) for x in lines], next_cursor=cursor)


class FunderAccountPublic(BaseModel):
    funder_id: str
    charged_cents: int = Field(description="accepted charges (the funder's part, own shares excluded)")
    corrected_cents: int = Field(description="taken off by corrections of settled charges")
    paid_cents: int = Field(description="the funder's payments received")
    outstanding_cents: int = Field(description="what the funder owes: charged - corrected - paid")


@router.get("/funders/{funder_id}/account", response_model=FunderAccountPublic, tags=["bank"],
            responses=error_responses(404))
async def funder_account(
    funder_id: FunderIdPath, sessions: SessionsDep, principal: Annotated[Principal, require(*FINANCE)],
) -> FunderAccountPublic:
    """The funder's account from the ledger: what it was charged, less corrections and its payments."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    a = await banking.funder_account(sessions, funder_id)
    return FunderAccountPublic(funder_id=funder_id, charged_cents=a.charged_cents, corrected_cents=a.corrected_cents,
                               paid_cents=a.paid_cents, outstanding_cents=a.outstanding_cents)


# ------------------------------------------------------------------ recovery claims
class ClaimCreate(RequestModel):
    funder_id: FunderId
    provider_id: str = Field(min_length=1, max_length=64)


class ClaimPublic(BaseModel):
    id: str
    funder_id: str
    provider_id: str
    reason: str = Field(description="overdue (no payout offset the corrections in time) | requested (staff)")
    correction_count: int
    amount_cents: int = Field(description="the funder's amount the corrections removed")
    fee_cents: int = Field(description="the operator's fee given back")
    net_cents: int = Field(description="what the provider pays back")
    repaid_cents: int
    outstanding_cents: int
    reference: str = Field(description="the RF creditor reference (ISO 11649) the repayment carries")
    due_on: date
    created_at: datetime

    @classmethod
    def of(cls, c: RecoveryClaim) -> "ClaimPublic":
        return cls(**c.model_dump(), outstanding_cents=c.net_cents - c.repaid_cents)


class ClaimDetail(ClaimPublic):
    corrections: list[CorrectionPublic]


CLAIM_READERS = (*FINANCE, Role.FUNDER_REPORTING, *PROVIDER_STAFF, Role.PROVIDER_BILLING_SYSTEM)


@router.post("/recovery-claims", status_code=201, response_model=ClaimPublic, tags=["bank"],
             responses=error_responses(409, 422))
async def create_claim(
    body: ClaimCreate, request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*FINANCE, scope="body")],
) -> ClaimPublic:
    """Claim back from the provider now every correction of its charges to the funder that no settlement has
    offset (the daily run does it by itself after `RECOVERY_AFTER_DAYS`). 409 `nothing_to_recover`."""
    funder_id = acting_for_funder(principal, body.funder_id)
    settings = request.app.state.settings
    made = await recovery.claim(sessions, clock, principal, funder_id, body.provider_id,
                               settings.recovery_payment_days, settings.payer_iban)
    return ClaimPublic.of(made)


@router.get("/recovery-claims", response_model=Page[ClaimPublic], tags=["bank"])
async def list_claims(
    sessions: SessionsDep, page: PageDep, scope: Annotated[TenantScope, tenant_scope(*CLAIM_READERS)],
    open: bool = False,  # noqa: A002
) -> Page[ClaimPublic]:
    """Recovery claims, oldest first (`open=true`: those not repaid in full): the operator's all, a funder's
    staff their funder's, a provider's staff and systems their provider's."""
    claims, cursor = await recovery.claims_page(sessions, scope, page, open_only=open)
    return Page(items=[ClaimPublic.of(c) for c in claims], next_cursor=cursor)


@router.get("/recovery-claims/{claim_id}", response_model=ClaimDetail, tags=["bank"], responses=error_responses(404))
async def get_claim(
    claim_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*CLAIM_READERS)],
) -> ClaimDetail:
    """A claim with the corrections it claims back."""
    found, taken = await recovery.claim_of(sessions, principal, claim_id)
    return ClaimDetail(**ClaimPublic.of(found).model_dump(), corrections=[CorrectionPublic.of(c) for c in taken])


@router.post("/recovery-claims/{claim_id}/repayments", status_code=201, response_model=BankTransactionPublic,
             tags=["bank"], responses=created_or_repeated(BankTransactionPublic, 404, 409, 422))
async def record_repayment(
    claim_id: str, body: BankLine, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> JSONResponse:
    """A provider's repayment of the claim as booked on the operator's account (in part or in full). 422
    `repayment_exceeds_claim`; the same bank reference again answers the first record."""
    line, repeated = await recovery.record_repayment(sessions, clock, principal, claim_id, body.amount_cents,
                                                    body.booked_on, body.bank_reference)
    return JSONResponse(BankTransactionPublic.of(line).model_dump(mode="json"), status_code=200 if repeated else 201)
