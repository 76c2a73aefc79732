"""The invoicing room over HTTP: a funder's monthly figures (JSON or CSV), and its invoices as issued (numbered,
dated, credited by credit notes) with their documents (PDF, Finvoice 3.0). Parse, authorise, call ``invoices``
and ``issuing``."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from seteli_shared.auth import Principal, Role, TenantScope, ensure_visible, require
from seteli_shared.schemas import RequestModel
from seteli_shared.clock import ClockDep
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from ..common_api import FunderIdPath, Vat
from ..settlement.domain import VAT_EXEMPT
from . import finvoice, invoices, issuing, pdf

router = APIRouter()


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
                         total=InvoiceLinePublic(**vars(invoice.totals)), vat=Vat(**VAT_EXEMPT))


# ------------------------------------------------------------------ invoices as issued: numbered, dated, documents
class IssueInvoice(RequestModel):
    funder_id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")
    month: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM: a month that has ended")


class CreditInvoice(RequestModel):
    reason: Literal[issuing.CREDIT_REASONS] = Field(description="why the invoice is credited (a code)")  # type: ignore[valid-type]


class FunderInvoicePublic(BaseModel):
    id: str
    kind: str = Field(description="invoice | credit_note")
    number: int = Field(description="from the operator's invoice number series (gapless)")
    series: str = Field(description="the series: the operator's business ID (Y-tunnus)")
    funder_id: str
    buyer_name: str
    month: str
    invoice_date: date
    due_date: date
    payment_terms_days: int
    reference: str = Field(description="the Finnish reference (viitenumero, 7-3-1 check digit)")
    rf_reference: str = Field(description="the same reference as an RF creditor reference (ISO 11649)")
    total_cents: int = Field(description="what the funder pays (a credit note: negative, what it credits)")
    currency: str = "EUR"
    lines: list[InvoiceLinePublic]
    credits_invoice_id: str | None = None
    credit_reason: str | None = None
    credited_by: str | None = Field(default=None, description="the credit note that credited this invoice")
    vat: Vat
    seller_business_id: str
    seller_iban: str

    @classmethod
    def of(cls, invoice, settings) -> "FunderInvoicePublic":  # noqa: ANN001
        return cls(**invoice.model_dump(exclude={"lines", "created_at"}),
                   lines=[InvoiceLinePublic(**line) for line in invoice.lines], vat=Vat(**VAT_EXEMPT),
                   seller_business_id=settings.operator_business_id, seller_iban=settings.payer_iban)


DOCUMENTS = {"application/pdf": {"schema": {"type": "string", "format": "binary"}},
             "application/xml": {"schema": {"type": "string"}}}


@router.post("/funder-invoices", status_code=201, response_model=FunderInvoicePublic, tags=["invoices"],
             responses={200: {"model": FunderInvoicePublic, "description": "the month's invoice, issued before"},
                        **error_responses(409, 422)})
async def issue_funder_invoice(
    body: IssueInvoice, request: Request, response: Response, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> FunderInvoicePublic:
    """Issue the funder's invoice for a month that has ended: the next number of the operator's series
    (gapless: taken in the invoice's own transaction), dated today, due after the payment terms
    (`INVOICE_PAYMENT_TERMS_DAYS`, 14 days net), with a Finnish reference and the RF reference made of it;
    its amounts are the month's settlements as they stand (`GET /funders/{id}/invoices/{month}`), what is
    issued never changes. The month's invoice that is not credited is answered again (200: a retry issues
    nothing; credit it to invoice the month anew). 409 `month_not_over`, `nothing_to_invoice`."""
    invoice, made = await issuing.issue_invoice(sessions, clock, principal, request.app.state.settings,
                                                body.funder_id, body.month)
    response.status_code = 201 if made else 200
    return FunderInvoicePublic.of(invoice, request.app.state.settings)


@router.post("/funder-invoices/{invoice_id}/credit-note", status_code=201, response_model=FunderInvoicePublic,
             tags=["invoices"], responses={200: {"model": FunderInvoicePublic,
                                                 "description": "the invoice's credit note, made before"},
                                           **error_responses(404, 422)})
async def credit_funder_invoice(
    invoice_id: str, body: CreditInvoice, request: Request, response: Response, sessions: SessionsDep,
    clock: ClockDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> FunderInvoicePublic:
    """A credit note for the whole invoice (its lines negated, the next number of the series, naming the
    invoice it credits); the month may then be invoiced again. An invoice credited already answers its
    credit note (200)."""
    note, made = await issuing.credit_invoice(sessions, clock, principal, request.app.state.settings, invoice_id,
                                              body.reason)
    response.status_code = 201 if made else 200
    return FunderInvoicePublic.of(note, request.app.state.settings)


@router.get("/funder-invoices", response_model=list[FunderInvoicePublic], tags=["invoices"])
async def list_funder_invoices(
    request: Request, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_FINANCE, scope="list")],
    funder_id: str | None = None,
) -> list[FunderInvoicePublic]:
    """The invoices and credit notes issued, by number (a funder's staff: their funder's)."""
    items = await issuing.list_invoices(sessions, TenantScope(principal), funder_id)
    return [FunderInvoicePublic.of(i, request.app.state.settings) for i in items]


@router.get("/funder-invoices/{invoice_id}", response_model=FunderInvoicePublic, tags=["invoices"], responses={
    200: {"content": DOCUMENTS, "description": "the invoice: JSON, a PDF (`?format=pdf` or `Accept: application/pdf`) "
          "or a Finvoice 3.0 e-invoice (`?format=finvoice` or `Accept: application/xml`)"},
    **error_responses(404, 422)})
async def funder_invoice_document(
    invoice_id: str, request: Request, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_FINANCE)],
    format: Literal["json", "pdf", "finvoice"] | None = None,  # noqa: A002
) -> FunderInvoicePublic | Response:
    """An invoice or credit note as issued, as data or as its documents: a PDF a person reads (Finnish:
    dates `1.6.2026`, money `1 234,50 €`) and a Finvoice 3.0 XML e-invoice for the funder's purchase-invoice
    system (INV01 an invoice, INV02 a credit note, VAT 0 % exempt)."""
    invoice, credited = await issuing.get_invoice(sessions, invoice_id)
    ensure_visible(principal, "funder_invoice", funder_id=invoice.funder_id)
    settings = request.app.state.settings
    accept = request.headers.get("accept", "")
    wanted = format or ("pdf" if "application/pdf" in accept else "finvoice" if "application/xml" in accept
                        else "json")
    name = f"{'hyvityslasku' if invoice.kind == issuing.CREDIT_NOTE else 'lasku'}-{invoice.number}"
    seller = issuing.Seller.of(settings)
    if wanted == "pdf":
        return Response(pdf.build(invoice, seller, credited), media_type="application/pdf",
                        headers={"content-disposition": f'attachment; filename="{name}.pdf"'})
    if wanted == "finvoice":
        address = settings.funder_einvoice_addresses.get(invoice.funder_id)
        receiver = tuple(address.split("@", 1)) if address and "@" in address else None
        xml = finvoice.build(invoice, seller, credited=credited, receiver=receiver,
                             sender_intermediator=settings.finvoice_intermediator,
                             reference_scheme=settings.finvoice_reference_scheme)
        return Response(xml, media_type="application/xml; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}.xml"'})
    return FunderInvoicePublic.of(invoice, settings)
