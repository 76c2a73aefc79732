"""The invoicing room over HTTP: a funder's monthly invoice (JSON or CSV). Parse, authorise, call ``invoices``."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from seteli_shared.auth import Principal, Role, ensure_visible, require
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from ..common_api import FunderIdPath, Vat
from ..settlement.domain import VAT_EXEMPT
from . import invoices

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
