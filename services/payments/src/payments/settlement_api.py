"""Settlement runs over HTTP: the daily run on demand, runs and their payment files (pain.001), charges at
risk of missing the 14-day guarantee, settlement statements, providers' webhooks for settlement notices
and their delivery log, funders' monthly invoices. Parse, authorise, call a use case (``payouts``,
``notices``, ``invoices``). The router's lifespan runs the webhook worker, the daily scheduler, the purge of
expired Idempotency-Key records (``intake``) and the slow retry of parked notices (``notices``)."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, AsyncIterator, Literal

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, Field, HttpUrl
from sqlalchemy import select

from seteli_shared.auth import PROVIDER_STAFF, Principal, Role, ensure_visible, require
from seteli_shared.clock import SYSTEM_CLOCK, ClockDep
from seteli_shared.db import unit_of_work
from seteli_shared import audit
from seteli_shared.errors import Conflict, DomainError
from seteli_shared.money import from_hundredths
from seteli_shared.schemas import Page, PageDep, RequestModel, paginate
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import egress, intake, invoices, notices, pain001, payouts, settlement
from .models import WebhookAttempt, WebhookDelivery

READERS = (Role.OPERATOR, Role.FUNDER_FINANCE, Role.FUNDER_REPORTING, *PROVIDER_STAFF, Role.PROVIDER_BILLING_SYSTEM)
WEBHOOK_ROLES = (Role.OPERATOR, Role.PROVIDER_MANAGER)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime, settings = app.state.runtime, app.state.settings
    clock = getattr(app.state, "clock", None) or SYSTEM_CLOCK
    worker = notices.WebhookWorker(runtime.sessions, settings, runtime.engine.dialect.name == "postgresql",
                                   # a test's own resolver and TLS trust (app.state, as its clock); else the system's
                                   getattr(app.state, "webhook_resolver", None), getattr(app.state, "webhook_tls", True))
    tasks = [asyncio.create_task(worker.run(), name="webhook-worker"),
             asyncio.create_task(intake.purge_scheduler(runtime.sessions, clock, settings), name="idempotency-purge"),
             asyncio.create_task(notices.parked_retry_scheduler(runtime.sessions, settings), name="parked-retry")]
    if settings.settlement_scheduler and settings.environment != "test":
        tasks.append(asyncio.create_task(payouts.scheduler(runtime.sessions, clock, settings),
                                         name="settlement-scheduler"))
    try:
        yield
    finally:
        worker.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


router = APIRouter(lifespan=lifespan)


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
    result = await payouts.run_settlements(sessions, clock, principal, request.app.state.settings, hold_back=True)
    return _result(result)


def _result(result: payouts.RunResult) -> RunResultPublic:
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
    runs, cursor = await payouts.runs_page(sessions, page)
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
        xml = await payouts.payment_file(sessions, run_id, request.app.state.settings)
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
    found = await payouts.charges_at_risk(sessions, clock, request.app.state.settings)
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


class Vat(BaseModel):
    vat_exempt: bool
    basis: str
    text: dict[str, str]


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
    s, charges, payout, offset = await payouts.statement(sessions, settlement_id)
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


# ------------------------------------------------------------------ webhooks
class WebhookSet(RequestModel):
    url: HttpUrl = Field(description="where settlement notices are POSTed: https, at a host that resolves to public "
                         "internet addresses only")


class WebhookSecret(BaseModel):
    provider_id: str
    url: str
    secret: str = Field(description="the HMAC-SHA256 key of `X-Seteli-Signature`; shown only now")
    signature_header: str = notices.SIGNATURE_HEADER
    updated_at: datetime


@router.put("/providers/{provider_id}/webhook", response_model=WebhookSecret, tags=["notices"],
            responses=error_responses(404, 422))
async def set_webhook(
    provider_id: str, body: WebhookSet, sessions: SessionsDep, clock: ClockDep, request: Request,
    principal: Annotated[Principal, require(*WEBHOOK_ROLES)],
) -> WebhookSecret:
    """Set the provider's webhook for settlement notices (for providers without an AMQP consumer). Each
    call makes a new secret, shown once. Notices are POSTed with `X-Seteli-Signature: t=<unix time>,v1=<hex>`,
    the HMAC-SHA256 of `"<t>." + body`; a non-2xx answer (a redirect too: none is followed) is retried with
    back-off. The URL must be https (422 `webhook_not_https`) at a host whose every address is on the public
    internet (422 `webhook_address_not_public`: loopback, private, shared, link-local, multicast, reserved, or
    an IPv6 address carrying such an IPv4 one; `webhook_address_unresolvable`); it is checked again at each
    delivery, which connects to the address it checked."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    if len(str(body.url)) > 2000:
        raise DomainError("url_too_long", "the URL is longer than 2000 characters")
    await egress.check(str(body.url), egress.Policy.of(request.app.state.settings),
                       getattr(request.app.state, "webhook_resolver", None))
    async with unit_of_work(sessions) as session:
        hook = await notices.set_webhook(session, provider_id, str(body.url), clock.now())
        await audit.record(session, principal, "webhook.set", "provider", provider_id, None)
    return WebhookSecret(provider_id=provider_id, url=hook.url, secret=hook.secret, updated_at=hook.updated_at)


class AttemptPublic(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: str
    message_id: str
    notice_type: str
    url: str
    status: str = Field(description="pending, delivered, parked (failed `WEBHOOK_MAX_ATTEMPTS` times: tried again "
                        "hourly, when the webhook is set anew and by the operator) or failed (the webhook is gone)")
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptPublic]


@router.get("/providers/{provider_id}/webhook/deliveries", response_model=Page[DeliveryPublic], tags=["notices"],
            responses=error_responses(404))
async def webhook_deliveries(
    provider_id: str, sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(*WEBHOOK_ROLES)],
) -> Page[DeliveryPublic]:
    """The provider's webhook deliveries, oldest first, each with the log of its attempts."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    async with sessions() as session:
        rows, cursor = await paginate(session, select(WebhookDelivery).where(
            WebhookDelivery.provider_id == provider_id), [WebhookDelivery.created_at, WebhookDelivery.id], page)
        attempts = (await session.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(
            [d.id for d in rows])).order_by(WebhookAttempt.id))).scalars().all() if rows else []
    by_delivery: dict[str, list[AttemptPublic]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(AttemptPublic(**a.model_dump(exclude={"id", "delivery_id"})))
    return Page(items=[DeliveryPublic(**d.model_dump(exclude={"body", "provider_id", "last_error"}),
                                      log=by_delivery.get(d.id, [])) for d in rows], next_cursor=cursor)


# ------------------------------------------------------------------ funders' invoices
class InvoiceLinePublic(BaseModel):
    category: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int


class InvoicePublic(BaseModel):
    funder_id: str
    month: str
    currency: str = "EUR"
    lines: list[InvoiceLinePublic]
    total: InvoiceLinePublic
    vat: Vat


CSV = {"text/csv": {"schema": {"type": "string"}}}
Month = Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]


#: a funder id in a path: its contract's shape (it also names the CSV file, so no other characters)
FunderIdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


@router.get("/funders/{funder_id}/invoices/{month}", response_model=InvoicePublic, tags=["invoices"], responses={
    200: {"content": CSV, "description": "the invoice (JSON, or CSV with `?format=csv` or `Accept: text/csv`)"},
    **error_responses(404, 422)})
async def funder_invoice(
    funder_id: FunderIdPath, month: Month, request: Request, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_FINANCE)],
    format: Literal["json", "csv"] | None = None,  # noqa: A002
) -> InvoicePublic | Response:
    """The funder's invoice for a month: what was settled for it, by service category, gross, the
    operator's fees and net, less the corrections of earlier settlements offset in the month (VAT-exempt,
    Finnish VAT Act 34 §)."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    invoice = await invoices.monthly_invoice(sessions, funder_id, month)
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if wants_csv:
        return Response(invoices.to_csv(invoice), media_type="text/csv; charset=utf-8", headers={
            "content-disposition": f'attachment; filename="invoice-{funder_id}-{month}.csv"'})
    return InvoicePublic(funder_id=funder_id, month=month, lines=[InvoiceLinePublic(**vars(x)) for x in invoice.lines],
                         total=InvoiceLinePublic(**vars(invoice.totals)), vat=Vat(**settlement.VAT_EXEMPT))
