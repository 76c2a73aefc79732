"""A provider's pages, for one without a billing system of its own: its register entry and price lists,
applying to a funder for a category (accepting the rulebook), charging a voucher by its code one at a
time or the month's CSV file with a result per line, and its charges and settlement statements, each
downloadable. The provider id comes from the signed-in user's token; the services scope every list to
it (a provider never sees another provider's charges)."""
from __future__ import annotations

import csv
import io
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .backend import BackendError, error_of
from .public import categories, category_name, cents_of
from .web import PROVIDER, Page

router = APIRouter(prefix="/provider")
MAX_CSV_BYTES = 8 * 1024 * 1024


@router.get("")
async def provider_home(request: Request) -> Response:
    page = Page(request)
    user = page.need(PROVIDER)
    entry, entry_error, prices = None, None, []
    try:
        entry = await page.call("registry", "GET", f"/providers/{user.provider_id}")
        prices = (await page.call("registry", "GET", f"/providers/{user.provider_id}/price-lists",
                                  params={"limit": 100}))["items"]
    except BackendError as err:
        entry_error = page.error_text(err)
    cats = await categories(page)
    return page.render("provider.html", entry=entry, entry_error=entry_error, prices=prices,
                       cat=lambda code: category_name(cats, code, page.lang))


# ---------------------------------------------------------------- applying to a funder
@router.get("/apply")
async def apply_form(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    return page.render("apply.html", categories=await categories(page), form={})


@router.post("/apply")
async def apply(request: Request) -> Response:
    page = Page(request)
    user = page.need(PROVIDER)
    form = await page.check_csrf()
    funder, category = str(form.get("funder_id", "")).strip().lower(), str(form.get("category", ""))
    cats = await categories(page)
    values = {"funder_id": funder, "category": category}
    if form.get("accept") != "yes":
        return page.render("apply.html", status=422, categories=cats, form=values, error=page.t("accept_rulebook"))
    try:
        books = (await page.backend.json("registry", "GET", f"/funders/{funder}/rulebooks",
                                         params={"category": category}))["items"]
        if not books:
            raise BackendError(422, "no_rulebook")
        book = max(books, key=lambda b: b.get("published_at") or b.get("created_at") or "")
        app_ = await page.call("registry", "POST", f"/providers/{user.provider_id}/applications", json={
            "funder_id": funder, "categories": [category], "rulebook_versions": {category: book["rulebook_version"]}})
        app_ = await page.call("registry", "POST", f"/applications/{app_['id']}/submit")
    except BackendError as err:
        return page.render("apply.html", status=err.status if err.status < 500 else 503, categories=cats,
                           form=values, error=page.error_text(err))
    return page.render("apply.html", categories=cats, form={}, sent=app_, rulebook=book)


# ---------------------------------------------------------------- charging
@router.get("/charge")
async def charge_form(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    return page.render("charge.html", form={"service_date": date.today().isoformat()})


@router.post("/charge")
async def charge(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    form = await page.check_csrf()
    values = {k: str(form.get(k, "")).strip() for k in ("voucher_code", "provider_reference", "service_date",
                                                        "units", "unit_price")}
    body: dict = {"voucher_code": values["voucher_code"], "provider_reference": values["provider_reference"],
                  "service_date": values["service_date"], "units": values["units"].replace(",", ".")}
    price = cents_of(values["unit_price"])
    if price is not None:
        body["unit_price_cents"] = price
    try:
        done = await page.call("payments", "POST", "/charges", json=body)
    except BackendError as err:
        return page.render("charge.html", status=err.status if err.status < 500 else 503, form=values,
                           error=page.error_text(err), error_details=err.details)
    return page.render("charge.html", form={"service_date": values["service_date"]}, done=done)


@router.post("/charges/upload")
async def upload(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    form = await page.check_csrf()
    file = form.get("file")
    data = await file.read(MAX_CSV_BYTES + 1) if hasattr(file, "read") else b""
    if not data or len(data) > MAX_CSV_BYTES:
        return page.render("charge.html", status=422, form={"service_date": date.today().isoformat()},
                           error=page.t("csv_file"))
    r = await page.raw("payments", "POST", "/charges/bulk", content=data, headers={"content-type": "text/csv"})
    if r.status_code >= 400:
        err = error_of(r)
        return page.render("charge.html", status=err.status if err.status < 500 else 503,
                           form={"service_date": date.today().isoformat()}, error=page.error_text(err))
    return page.render("bulk_result.html", result=r.json(), filename=getattr(file, "filename", ""))


# ---------------------------------------------------------------- charges and settlements
async def _charges(page: Page) -> list[dict]:
    return await page.pages("payments", "/charges")


@router.get("/charges")
async def charges(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    try:
        items = await _charges(page)
    except BackendError as err:
        return page.render("error.html", status=503 if err.status >= 500 else err.status, message=page.error_text(err))
    return page.render("charges.html", items=items)


CHARGE_COLUMNS = ("id", "provider_reference", "service_date", "category", "units", "unit_price_cents",
                  "amount_cents", "own_share_cents", "status", "settlement_id", "fee_cents", "net_cents")


def csv_response(rows: list[dict], columns: tuple[str, ...], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/charges.csv")
async def charges_csv(request: Request) -> Response:
    page = Page(request)
    user = page.need(PROVIDER)
    try:
        items = await _charges(page)
    except BackendError as err:
        return page.render("error.html", status=503 if err.status >= 500 else err.status, message=page.error_text(err))
    return csv_response(items, CHARGE_COLUMNS, f"charges-{user.provider_id}.csv")


@router.get("/settlements")
async def settlements(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    try:
        items = await page.pages("payments", "/settlements")
    except BackendError as err:
        return page.render("error.html", status=503 if err.status >= 500 else err.status, message=page.error_text(err))
    return page.render("settlements.html", items=items)


async def _statement(page: Page, settlement_id: str) -> dict:
    return await page.call("payments", "GET", f"/settlements/{settlement_id}/statement")


@router.get("/settlements/{settlement_id}")
async def statement(request: Request, settlement_id: str) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    try:
        s = await _statement(page, settlement_id)
    except BackendError as err:
        return page.render("error.html", status=err.status if err.status < 500 else 503, message=page.error_text(err))
    return page.render("statement.html", s=s)


@router.get("/settlements/{settlement_id}/statement.csv")
async def statement_csv(request: Request, settlement_id: str) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    try:
        s = await _statement(page, settlement_id)
    except BackendError as err:
        return page.render("error.html", status=err.status if err.status < 500 else 503, message=page.error_text(err))
    lines = s.get("lines") or []
    columns = tuple(lines[0].keys()) if lines else ("charge_id",)
    return csv_response(lines, columns, f"statement-{settlement_id}.csv")
