"""The settlement room over HTTP: runs (the daily run on demand, an operator's run of everything accepted),
their payment files (pain.001), charges at risk of missing the 14-day guarantee, settlements and their
statements. Parse, authorise, call a use case (``runs``, ``reads``)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from seteli_shared.auth import Principal, Role, TenantScope, ensure_visible, require, tenant_scope
from seteli_shared.clock import ClockDep
from seteli_shared.errors import Conflict
from seteli_shared.money import from_hundredths
from seteli_shared.schemas import Page, PageDep
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from ..charging.schemas import ChargePublic
from ..common_api import READERS, Vat
from . import domain as settlement
from . import pain001, reads, runs

router = APIRouter()


class SettlementPublic(BaseModel):
    id: str
    funder_id: str
    provider_id: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    fee_rate: str
    created_at: datetime


class SettlementDetail(SettlementPublic):
    charges: list[ChargePublic]


# ------------------------------------------------------------------ runs
class SettlementBrief(BaseModel):
    id: str
    funder_id: str
    provider_id: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    fee_rate: str
    reference: str
    payout_reason: str


class HeldBack(BaseModel):
    funder_id: str
    provider_id: str
    net_cents: int


class RunPublic(BaseModel):
    id: str
    kind: str
    run_date: date
    created_at: datetime
    settlement_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    held_back_count: int
    executed_on: date | None = Field(default=None, description="the day the bank executed the run's payment "
                                     "file (POST /settlement-runs/{id}/execution); null until then")


class RecoveryBrief(BaseModel):
    id: str
    funder_id: str
    provider_id: str
    net_cents: int
    reference: str


class RunResultPublic(RunPublic):
    settlements: list[SettlementBrief]
    held_back: list[HeldBack]
    recovery_claims: list[RecoveryBrief] = Field(default_factory=list, description=(
        "corrections no payout offset in time, claimed back from their providers by this run"))


@router.post("/settlement-runs", response_model=RunResultPublic, tags=["settlements"])
async def run_daily_settlement(
    request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> RunResultPublic:
    """The daily settlement run now (the scheduler runs it every day at `SETTLEMENT_DAILY_AT`; also
    `seteli-payments settle`): each provider's accepted charges per funder, the funder's fee; payouts under
    the minimum (EUR 40) wait for a later run unless the 14-day guarantee is due (`guarantee_due`)."""
    result = await runs.run_settlements(sessions, clock, principal, request.app.state.settings, hold_back=True)
    return _result(result)


def _result(result: runs.RunResult) -> RunResultPublic:
    return RunResultPublic(
        **result.run.model_dump(),
        settlements=[SettlementBrief(**s.model_dump(include=set(SettlementBrief.model_fields) - {
            "reference", "payout_reason"}), reference=p.reference, payout_reason=p.reason)
            for s, p in zip(result.settlements, result.payouts)],
        held_back=[HeldBack(funder_id=f, provider_id=p, net_cents=n) for f, p, n in result.held_back],
        recovery_claims=[RecoveryBrief(**c.model_dump(include=set(RecoveryBrief.model_fields))) for c in result.claims])


@router.get("/settlement-runs", response_model=Page[RunPublic], tags=["settlements"])
async def list_runs(
    sessions: SessionsDep, page: PageDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> Page[RunPublic]:
    """Settlement runs, oldest first."""
    runs, cursor = await reads.runs_page(sessions, page)
    return Page(items=[RunPublic(**r.model_dump()) for r in runs], next_cursor=cursor)


XML = {"application/xml": {"schema": {"type": "string"}}}


@router.get("/settlement-runs/{run_id}/payment-file", response_class=Response, tags=["settlements"], responses={
    200: {"content": XML, "description": "ISO 20022 pain.001.001.03 credit transfers, one per settlement"},
    **error_responses(404, 409)})
async def payment_file(
    run_id: str, request: Request, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> Response:
    """The run's payment file for the bank: one SEPA credit transfer per settlement to the provider's IBAN
    with its RF creditor reference (none for a payout that corrections brought to 0.00). 409
    `payee_account_unknown` when payments has not heard a payee's IBAN; 409 `nothing_to_pay` for a run
    that transfers no money (no settlement, or only payouts of 0.00): pain.001 has no empty form."""
    try:
        xml = await reads.payment_file(sessions, run_id, request.app.state.settings)
    except pain001.MissingAccount as exc:
        raise Conflict("payee_account_unknown", "a payee's IBAN is not known yet", payments=str(exc)) from None
    return Response(xml, media_type="application/xml",
                    headers={"content-disposition": f'attachment; filename="pain001-{run_id}.xml"'})


class AtRiskPublic(BaseModel):
    charge_id: str
    funder_id: str
    provider_id: str
    amount_cents: int
    accepted_at: datetime
    pay_by: date
    days_left: int = Field(description="days to the guarantee's deadline; negative: already past it")


@router.get("/settlements/at-risk", response_model=list[AtRiskPublic], tags=["settlements"])
async def at_risk(
    request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> list[AtRiskPublic]:
    """Unpaid charges at risk of missing the 14-day guarantee (at most `SETTLEMENT_AT_RISK_DAYS` left),
    the most urgent first."""
    found = await reads.charges_at_risk(sessions, clock, request.app.state.settings)
    return [AtRiskPublic(charge_id=a.charge.id, funder_id=a.charge.funder_id, provider_id=a.charge.provider_id,
                         amount_cents=a.charge.amount_cents, accepted_at=a.charge.accepted_at, pay_by=a.risk.deadline,
                         days_left=a.risk.days_left) for a in found]


# ------------------------------------------------------------------ statements
class StatementLine(BaseModel):
    line_type: Literal["charge", "correction"] = Field(
        default="charge", description="a charge settled now, or a correction of a charge settled earlier (its "
        "figures negative: taken off this payout)")
    charge_id: str
    correction_id: str | None = None
    voucher_id: str
    provider_reference: str
    category: str
    service_date: date
    units: Decimal
    unit_price_cents: int | None
    gross_cents: int
    fee_cents: int
    net_cents: int


class Statement(BaseModel):
    settlement_id: str
    run_id: str | None
    funder_id: str
    provider_id: str
    payee_name: str | None
    created_at: datetime
    currency: str = "EUR"
    fee_rate: str
    lines: list[StatementLine]
    charge_count: int
    correction_count: int = Field(default=0, description="corrections of earlier settlements offset here")
    gross_cents: int
    fee_cents: int
    net_cents: int
    reference: str | None = Field(description="the payment's RF creditor reference")
    payout_reason: str | None
    vat: Vat


@router.get("/settlements/{settlement_id}/statement", response_model=Statement, tags=["settlements"],
            responses=error_responses(404))
async def get_statement(
    settlement_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
) -> Statement:
    """The settlement's statement: its lines, the fee, the net; VAT-exempt social and health services
    (Finnish VAT Act 34 §). The provider's and the funder's staff see their own."""
    s, charges, payout, offset = await reads.statement(sessions, settlement_id)
    ensure_visible(principal, "settlement", funder_id=s.funder_id, provider_id=s.provider_id)
    return Statement(
        settlement_id=s.id, run_id=payout.run_id if payout else None, funder_id=s.funder_id,
        provider_id=s.provider_id, payee_name=payout.payee_name if payout else None, created_at=s.created_at,
        fee_rate=s.fee_rate, charge_count=s.charge_count, gross_cents=s.gross_cents, fee_cents=s.fee_cents,
        net_cents=s.net_cents, reference=payout.reference if payout else None,
        payout_reason=payout.reason if payout else None, vat=Vat(**settlement.VAT_EXEMPT),
        lines=[StatementLine(charge_id=c.id, voucher_id=c.voucher_id, provider_reference=c.provider_reference,
                             category=c.category, service_date=c.service_date, units=from_hundredths(c.units_x100),
                             unit_price_cents=c.unit_price_cents, gross_cents=c.amount_cents,
                             fee_cents=c.fee_cents or 0, net_cents=c.net_cents or 0) for c in charges]
        + [StatementLine(line_type="correction", charge_id=k.charge_id, correction_id=k.id, voucher_id=k.voucher_id,
                         provider_reference=ref, category=k.category, service_date=k.service_date,
                         units=-from_hundredths(k.units_x100), unit_price_cents=None, gross_cents=-k.amount_cents,
                         fee_cents=-k.fee_cents, net_cents=-k.net_cents) for k, ref in offset],
        correction_count=s.correction_count)


@router.post("/settlements/run", response_model=list[SettlementPublic], tags=["settlements"])
async def run_settlement(
    request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> list[SettlementPublic]:
    """Settle all accepted charges now: one settlement per provider and funder, the fee at the funder's
    contract rate (the configured ``operator_fee_rate`` for a funder payments has not heard of)."""
    made = (await runs.run_settlements(sessions, clock, principal, request.app.state.settings,
                                       hold_back=False)).settlements
    return [SettlementPublic(**s.model_dump()) for s in made]


@router.get("/settlements", response_model=Page[SettlementPublic], tags=["settlements"])
async def list_settlements(
    sessions: SessionsDep, page: PageDep, scope: Annotated[TenantScope, tenant_scope(*READERS)],
    provider_id: str | None = None, funder_id: str | None = None,
) -> Page[SettlementPublic]:
    """Settlements in the order they were made: a funder's staff see their funder's, a provider's staff
    their provider's (whatever the query asks)."""
    settlements, cursor = await reads.settlements_page(sessions, scope, page,
                                                       funder_id=funder_id, provider_id=provider_id)
    return Page(items=[SettlementPublic(**s.model_dump()) for s in settlements], next_cursor=cursor)


@router.get("/settlements/{settlement_id}", response_model=SettlementDetail, tags=["settlements"])
async def get_settlement(
    settlement_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> SettlementDetail:
    s, charges = await reads.get_settlement(sessions, settlement_id)
    ensure_visible(principal, "settlement", funder_id=s.funder_id, provider_id=s.provider_id)
    return SettlementDetail(**s.model_dump(), charges=[ChargePublic.of(c) for c in charges])
