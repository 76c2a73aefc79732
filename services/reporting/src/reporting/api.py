"""Reporting HTTP API: per-funder figures folded from events (routes only: authorise, call a use case)."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from seteli_shared.auth import FUNDER_STAFF, Principal, Role, TenantScope, ensure_visible, require, tenant_scope
from seteli_shared.clock import Clock, ClockDep
from seteli_shared.schemas import Count, Page, PageDep, RequestModel
from seteli_shared.web import error_responses
from seteli_shared.money import from_hundredths
from seteli_shared.service import SessionsDep

from . import charts, domain, texts, usecases
from .models import FunderFigures

router = APIRouter(tags=["reports"])


class FiguresPublic(BaseModel):
    funder_id: str
    providers_approved: int
    approvals: int
    vouchers_issued: int
    clients: int
    provider_choices: int
    charges_accepted: int
    units_charged: Decimal
    charged_cents: int
    own_share_cents: int
    charges_settled: int
    settlements: int
    settled_gross_cents: int
    fee_cents: int
    net_cents: int

    @classmethod
    def of(cls, f: FunderFigures) -> "FiguresPublic":
        return cls(**f.model_dump(exclude={"units_charged_x100"}), units_charged=from_hundredths(f.units_charged_x100))


@router.get("/funders/{funder_id}/figures", response_model=FiguresPublic)
async def funder_figures(
    funder_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF)],
) -> FiguresPublic:
    """Providers approved, vouchers issued, units and euros charged and settled, fees (cents)."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    return FiguresPublic.of(await usecases.funder_figures(sessions, funder_id))


@router.get("/figures", response_model=Page[FiguresPublic])
async def all_figures(
    sessions: SessionsDep, page: PageDep,
    scope: Annotated[TenantScope, tenant_scope(Role.OPERATOR, *FUNDER_STAFF)],
) -> Page[FiguresPublic]:
    """Funders' figures, by funder: every funder's for operator staff, a funder's staff their own."""
    rows, cursor = await usecases.figures_page(sessions, scope, page)
    return Page(items=[FiguresPublic.of(f) for f in rows], next_cursor=cursor)


# ------------------------------------------------------------------ monitoring reports (issue 10)
Period = Annotated[str | None, Query(description="the month, YYYY-MM (default: this month)", max_length=7)]
Lang = Annotated[Literal["fi", "sv", "en"], Query(description="the language of the words a person reads: titles, "
                                                   "axes, legends, category names, column headings")]
CsvForm = Annotated[Literal["plain", "spreadsheet"], Query(
    alias="format", description="``plain`` (default, for machines): comma-separated, codes and plain numbers "
    "(cents, ``27.47``); ``spreadsheet``: as Finnish Excel and LibreOffice open it: UTF-8 with a byte-order "
    "mark, semicolons, decimal commas, euros instead of cents, headings and category names in ``lang``")]
CategoryQ = Annotated[str | None, Query(pattern=r"^[a-z_]{2,40}$", description="a service category, e.g. home_care "
                                        "(default: every category)")]
READERS = (Role.OPERATOR, *FUNDER_STAFF)
SUPPRESSED = ("names the figures suppressed by the small-cell rule: their values are null (fewer than 5 clients, "
              "or a secondary cell without which one could be worked out from the month's other figures, in any "
              "table of any report; see the audit)")


class CategoryRow(BaseModel):
    """One row of the monthly report: a service category (or ``total``). Money in cents, units as
    decimal strings, shares as decimal fractions (0.8823). A suppressed figure is null and named in
    ``suppressed``."""

    category: str
    vouchers_issued: int | None
    vouchers_active: int | None
    vouchers_expired: int | None
    vouchers_revoked: int | None
    clients_served: int | None = Field(description="distinct pseudonymous clients with charges in the month")
    units_granted: Decimal | None = Field(description="units per month of the monthly vouchers in force")
    units_used: Decimal | None
    utilisation: Decimal | None = Field(description="units used / units granted")
    charges: int | None
    charged_cents: int | None = Field(description="charged to the funder (cancelled charges excluded)")
    own_share_cents: int | None
    volume_cents: int | None = Field(description="money volume including the clients' own shares")
    average_charged_price_cents: int | None = Field(description="unit price weighted by units charged")
    settled_charges: int | None
    settled_gross_cents: int | None
    fee_cents: int | None
    net_cents: int | None
    settled_within_14_days_share: Decimal | None
    worst_settlement_delay_days: Decimal | None
    feedback_responses: int | None
    satisfied_share: Decimal | None = Field(description="ratings 4 (satisfied) and 5 (very satisfied)")
    response_rate: Decimal | None = Field(description="clients who gave feedback / clients with a voucher in force")
    providers_approved: int | None
    providers_suspended: int | None
    providers_with_prices: int | None
    average_list_price_cents: int | None = Field(description="average of the providers' prices in force at month end")
    suppressed: list[str] = Field(description=SUPPRESSED)


class ProviderShareRow(BaseModel):
    category: str
    provider_id: str
    clients: int | None
    charged_cents: int | None
    units: Decimal | None
    market_share: Decimal | None = Field(description="share of the category's charged euros")
    suppressed: list[str] = Field(description=SUPPRESSED)


class AgeBandRow(BaseModel):
    age_band: str
    switches: int | None
    clients: int | None
    suppressed: list[str] = Field(description=SUPPRESSED)


class Switches(AgeBandRow):
    """Provider switches in the month (a choice naming a previous provider), in total and by age band."""

    age_bands: list[AgeBandRow]


class MonthlyReport(BaseModel):
    """The standard monthly monitoring report (schema ``seteli.monthly-report.v1``): per service
    category and in total; market shares of providers; provider switches by clients' age band.
    Months are calendar months: charges by service date, vouchers, choices and feedback by their date.
    Settlement figures are of the month's charges. No figure describes fewer than ``min_clients``
    clients (see ``suppressed``)."""

    model_config = ConfigDict(json_schema_extra={"x-schema": "seteli.monthly-report.v1"})
    schema_: str = Field(alias="schema", serialization_alias="schema")
    funder_id: str | None
    period: str
    min_clients: int
    categories: list[CategoryRow]
    total: CategoryRow
    providers: list[ProviderShareRow]
    switches: Switches


class PriceRow(BaseModel):
    """One month of one category's prices: providers with a price list in force at the month's end,
    their average, lowest and highest price per unit, and the price weighted by the units charged."""

    period: str
    category: str
    providers: int
    average_price_cents: int | None
    average_price_eur: Decimal | None
    lowest_price_cents: int | None
    highest_price_cents: int | None
    charged_units: Decimal | None
    unit_weighted_price_cents: int | None
    clients_charged: int | None
    suppressed: list[str] = Field(description=SUPPRESSED)


class PriceReport(BaseModel):
    funder_id: str
    category: str | None
    items: list[PriceRow]


class AuditCell(BaseModel):
    """One suppressed cell and the interval a reader can narrow it to from everything published."""

    funder_id: str | None = Field(description="the funder whose report holds the cell (null: a cell of the "
                                              "operator's statistics across funders)")
    table: str = Field(description="category | total | provider (market shares) | switches | age_band")
    row: dict[str, str] = Field(description="the row's key, e.g. {\"category\": \"cleaning\"}")
    figure: str
    lower: Decimal = Field(description="the smallest value the cell can take (cents, units or clients)")
    upper: Decimal | None = Field(description="the largest; null: no upper bound")
    verdict: str = Field(description="protected | within_small_range (a small cell shown to be 1-4) | too_narrow "
                                     "(narrower than the protection width)")
    model: str = Field(description="how sums of distinct clients were read: equal (nobody counted twice, as a "
                                   "reader may guess), bounds (at most the sum) or free")


class MonthlyAudit(BaseModel):
    """The audit of a month's published figures: for every suppressed cell, computed by linear
    programming from every figure the same readers can see (all reports of the month, every form), the
    smallest and largest value it can take; a cell of 1-4 clients must stay within its protection width
    (counts of clients: 0 to ``min_clients``; amounts: ``protection_share`` of the value either side)."""

    funder_id: str | None
    period: str
    min_clients: int
    protection_share: Decimal
    passed: bool
    cells: list[AuditCell]
    narrowest: AuditCell | None = Field(description="the interval narrowest against its upper end")
    seconds: float


class FeedbackCreate(RequestModel):
    rating: Count = Field(ge=1, le=5, description="1 very dissatisfied ... 4 satisfied, 5 very satisfied")
    text: str | None = Field(default=None, max_length=2000)


class FeedbackGiven(BaseModel):
    feedback_id: str
    voucher_id: str
    rating: int
    period: str


class FeedbackPublic(BaseModel):
    """A client's feedback as its funder's staff see it (without the voucher: answers stay anonymous)."""

    feedback_id: str
    category: str
    period: str
    rating: int
    text: str | None
    given_at: datetime


def _period(period: str | None, clock: Clock) -> str:
    return period if period is not None else str(domain.Period.of(clock.today()))


@router.post("/feedback", status_code=201, response_model=FeedbackGiven, tags=["feedback"],
             responses=error_responses(401, 403, 409, 422))
async def give_feedback(
    body: FeedbackCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.CLIENT, scope="none")],
) -> FeedbackGiven:
    """A client's rating (1-5) and optional text on its voucher's service this month, with the token of
    its light login (``POST /client-sessions`` on vouchers). Once per voucher and month: a second is
    refused with 409 ``feedback_already_given`` (``details``: the ``period``, the day it was given,
    ``given_on``, and ``next_from``, the day the next may be given); the first stays as it was."""
    row = await usecases.give_feedback(sessions, clock, principal.voucher_id, body.rating, body.text)
    return FeedbackGiven(feedback_id=row.feedback_id, voucher_id=row.voucher_id, rating=row.rating, period=row.period)


@router.get("/funders/{funder_id}/feedback", response_model=Page[FeedbackPublic], tags=["feedback"],
            responses=error_responses(401, 403, 404, 422))
async def funder_feedback(
    funder_id: str, sessions: SessionsDep, clock: ClockDep, page: PageDep,
    principal: Annotated[Principal, require(*FUNDER_STAFF)], period: Period = None,
) -> Page[FeedbackPublic]:
    """The feedback texts of a funder's clients in a month: for that funder's staff only."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    rows, cursor = await usecases.feedback_page(sessions, funder_id, _period(period, clock), page)
    return Page(items=[FeedbackPublic(feedback_id=f.feedback_id, category=cat, period=f.period, rating=f.rating,
                                      text=f.text, given_at=f.given_at) for f, cat in rows], next_cursor=cursor)


@router.get("/funders/{funder_id}/reports/monthly", response_model=MonthlyReport, tags=["reports"],
            responses=error_responses(401, 403, 404, 422))
async def monthly_report(
    funder_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*READERS)], period: Period = None,
) -> dict:
    """The standard monthly monitoring report of a funder (schema ``seteli.monthly-report.v1``)."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    return await usecases.monthly_report(sessions, funder_id, _period(period, clock))


@router.get("/funders/{funder_id}/reports/monthly.csv", tags=["reports"], response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "the category rows and the total"},
                       **error_responses(401, 403, 404, 422)})
async def monthly_report_csv(
    funder_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*READERS)], period: Period = None, form: CsvForm = "plain",
    lang: Lang = "fi",
) -> Response:
    """The monthly report's category rows and total as CSV (``..`` marks a suppressed figure), plain for
    machines or, with ``format=spreadsheet``, as a Finnish spreadsheet opens it."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    report = await usecases.monthly_report(sessions, funder_id, _period(period, clock))
    rows = [{"funder_id": funder_id, "period": report["period"], **r}
            for r in [*report["categories"], report["total"]]]
    return _csv(rows, ["funder_id", "period", *CategoryRow.model_fields], f"monthly-{funder_id}-{report['period']}",
                form, lang)


@router.get("/statistics/monthly", response_model=MonthlyReport, tags=["reports"],
            responses=error_responses(401, 403, 422))
async def operator_statistics(
    sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")], period: Period = None,
) -> dict:
    """Operator-wide statistics of a month across every funder, by category, under the same
    suppression rule (no market shares: those are each funder's)."""
    return await usecases.monthly_report(sessions, None, _period(period, clock))


@router.get("/funders/{funder_id}/reports/monthly/audit", response_model=MonthlyAudit, tags=["reports"],
            responses=error_responses(401, 403, 404, 422))
async def monthly_report_audit(
    funder_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*READERS)], period: Period = None,
) -> dict:
    """The audit of the monthly report as published (and of the price development's and the volume
    chart's month, the same cells): each suppressed cell's interval and verdict, and the narrowest."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    return await usecases.monthly_audit(sessions, funder_id, _period(period, clock))


@router.get("/statistics/monthly/audit", response_model=MonthlyAudit, tags=["reports"],
            responses=error_responses(401, 403, 422))
async def operator_statistics_audit(
    sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")], period: Period = None,
) -> dict:
    """The audit of the operator's statistics beside every funder's monthly report of the month."""
    return await usecases.monthly_audit(sessions, None, _period(period, clock))


@router.get("/funders/{funder_id}/reports/prices", response_model=PriceReport, tags=["reports"],
            responses=error_responses(401, 403, 404, 422))
async def price_report(
    funder_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
    category: CategoryQ = None,
) -> PriceReport:
    """Price development: per month and category, the average price per unit of the providers whose
    price list is in force, their number, and the price weighted by the units charged."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    rows = await usecases.price_development(sessions, funder_id, category)
    return PriceReport(funder_id=funder_id, category=category, items=[PriceRow(**r) for r in rows])


@router.get("/funders/{funder_id}/reports/prices.csv", tags=["reports"], response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "one line per month and category"},
                       **error_responses(401, 403, 404, 422)})
async def price_report_csv(
    funder_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
    category: CategoryQ = None, form: CsvForm = "plain", lang: Lang = "fi",
) -> Response:
    """Price development as CSV (``..`` marks a suppressed figure), plain or ``format=spreadsheet``."""
    ensure_visible(principal, "funder", funder_id=funder_id)
    rows = [{"funder_id": funder_id, **r} for r in await usecases.price_development(sessions, funder_id, category)]
    columns = ["funder_id", *PriceRow.model_fields]
    if form == "spreadsheet":  # the euros once, not as cents and as euros
        columns.remove("average_price_eur")
    return _csv(rows, columns, f"prices-{funder_id}", form, lang)


def _image(content: bytes, fmt: str) -> Response:
    return Response(content, media_type=charts.FORMATS[fmt], headers={"Cache-Control": "private, max-age=60"})


def _chart_routes(fmt: str) -> None:
    """The charts in one format (``.png``, ``.svg``): each its own path, as the contract names them."""
    responses = {200: {"content": {charts.FORMATS[fmt]: {}}, "description": "the chart"},
                 **error_responses(401, 403, 404, 422)}

    async def price_chart(
        funder_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
        category: CategoryQ = None, lang: Lang = "fi",
    ) -> Response:
        ensure_visible(principal, "funder", funder_id=funder_id)
        rows = await usecases.price_development(sessions, funder_id, category)
        counts = await usecases.providers_with_prices(sessions, funder_id, category,
                                                      sorted({r["period"] for r in rows}))
        return _image(charts.price_development(rows, category, fmt, lang, counts), fmt)

    async def volume_chart(
        funder_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
        lang: Lang = "fi",
    ) -> Response:
        ensure_visible(principal, "funder", funder_id=funder_id)
        rows = await usecases.monthly_volume(sessions, funder_id)
        return _image(charts.monthly_volume(rows, fmt, lang), fmt)

    router.add_api_route(f"/funders/{{funder_id}}/charts/price-development.{fmt}", price_chart, methods=["GET"],
                         tags=["charts"], response_class=Response, responses=responses,
                         name=f"price_development_{fmt}",
                         description=f"Price development by month (average list price, and weighted by units "
                                     f"charged) as {fmt.upper()}, in ``lang``; the y-axis from zero.")
    router.add_api_route(f"/funders/{{funder_id}}/charts/monthly-volume.{fmt}", volume_chart, methods=["GET"],
                         tags=["charts"], response_class=Response, responses=responses, name=f"monthly_volume_{fmt}",
                         description=f"Euros charged per month (the funder's part and the clients' own shares) "
                                     f"as {fmt.upper()}; months of fewer than 5 clients are marked suppressed.")


for _fmt in charts.FORMATS:
    _chart_routes(_fmt)


def _csv(rows: list[dict], columns: list[str], name: str, form: str = "plain", lang: str = "fi") -> Response:
    """A report as CSV: ``plain`` for machines (commas, codes, cents, ``27.47``), or ``spreadsheet`` as a
    Finnish spreadsheet opens it in columns (UTF-8 with a byte-order mark, semicolons, CRLF, decimal
    commas, euros, headings and category names in ``lang``)."""
    out = io.StringIO()
    if form == "spreadsheet":
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow([texts.column_heading(c, lang) for c in columns])
        for r in rows:
            writer.writerow([_spreadsheet_cell(r, c, lang) for c in columns])
        body = "\ufeff" + out.getvalue()
    else:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        for r in rows:
            hidden = set(r.get("suppressed", []))
            writer.writerow([" ".join(r["suppressed"]) if c == "suppressed" else ".." if c in hidden
                             else "" if r.get(c) is None else str(r[c]) for c in columns])
        body = out.getvalue()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]  # a header holds latin-1 only: no odd funder id in it
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.csv"'})


def _spreadsheet_cell(row: dict, column: str, lang: str) -> str:
    """One cell as a Finnish spreadsheet reads it: a number with a decimal comma and no grouping (so it
    stays a number), cents as euros, a category by its name, ``..`` for a suppressed figure."""
    value = row.get(column)
    if column == "suppressed":
        return ", ".join(texts.column_heading(c, lang) for c in row.get("suppressed", []))
    if column in row.get("suppressed", []):
        return ".."
    if value is None:
        return ""
    if column == "category":
        return texts.category_name(str(value), lang)
    if column == "period":
        return texts.month_label(str(value))
    if column.endswith("_cents"):
        value = Decimal(int(value)) / 100
    if isinstance(value, (Decimal, float)) or (isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value)):
        return str(value).replace(".", ",")
    return str(value)
