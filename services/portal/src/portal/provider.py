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
from .formats import Formats, typed_date
from .public import categories, category_name, cents_of, funder_names, funders
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
    applications: list = []
    try:  # the provider's manager reads its applications and the grounds of a rejection (a biller may not)
        applications = (await page.call("registry", "GET", "/applications", params={"limit": 100}))["items"]
    except BackendError:
        applications = []
    cats = await categories(page)
    names = await funder_names(page)
    return page.render("provider.html", entry=entry, entry_error=entry_error, prices=prices, applications=applications,
                       cat=lambda code: category_name(cats, code, page.lang),
                       funder_name=lambda fid: names.get(fid, fid))


# ---------------------------------------------------------------- applying to a funder
@router.get("/apply")
async def apply_form(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    return page.render("apply.html", categories=await categories(page), form={}, funders=await funders(page))


@router.post("/apply")
async def apply(request: Request) -> Response:
    page = Page(request)
    user = page.need(PROVIDER)
    form = await page.check_csrf()
    funder, category = str(form.get("funder_id", "")).strip().lower(), str(form.get("category", ""))
    cats = await categories(page)
    values = {"funder_id": funder, "category": category}
    if form.get("accept") != "yes":
        return page.render("apply.html", status=422, categories=cats, form=values, error=page.t("accept_rulebook"),
                           funders=await funders(page))
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
                           form=values, error=page.error_text(err), funders=await funders(page))
    return page.render("apply.html", categories=cats, form={}, sent=app_, rulebook=book, funders=await funders(page))


# ---------------------------------------------------------------- charging
#: the bulk CSV's columns as payments names them, and as a Finnish or Swedish spreadsheet user may write
#: them; the portal puts payments' names in the header line before it sends the file on
CSV_COLUMNS = ("voucher_code", "provider_reference", "service_date", "units", "unit_price", "tariff")
CSV_HEADINGS = {
    "fi": dict(zip(CSV_COLUMNS, ("setelin_koodi", "oma_viite", "palvelupaiva", "yksikot", "yksikkohinta", "aikalisa"))),
    "sv": dict(zip(CSV_COLUMNS, ("sedelns_kod", "egen_referens", "servicedag", "enheter", "enhetspris", "tidstillagg"))),
    "en": dict(zip(CSV_COLUMNS, CSV_COLUMNS)),
}
_FOLD = str.maketrans("äöå", "aoa")


def _heading_key(text: str) -> str:
    return text.strip().strip('"').lower().replace(" ", "_").replace("-", "_").translate(_FOLD)


_TO_SYSTEM = {_heading_key(h): column for names in CSV_HEADINGS.values() for column, h in names.items()}


def system_header(data: bytes) -> bytes:
    """The file with its header line's Finnish or Swedish column names (``setelin_koodi;oma_viite;...``,
    with or without umlauts) replaced by payments' names; other names and every other line untouched
    (payments ignores a column it does not know, naming it in a warning)."""
    bom = data.startswith(b"\xef\xbb\xbf")
    body = data[3:] if bom else data
    end = body.find(b"\n")
    line = body if end < 0 else body[:end]
    try:
        header = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return data
    delimiter = ";" if header.count(";") >= header.count(",") else ","
    names = [_TO_SYSTEM.get(_heading_key(n), n) for n in header.split(delimiter)]
    ending = "\r" if line.endswith(b"\r") else ""
    rest = b"" if end < 0 else body[end:]
    return (b"\xef\xbb\xbf" if bom else b"") + (delimiter.join(names) + ending).encode("utf-8") + rest


def _charge_page(page: Page, status: int = 200, **context: object) -> Response:
    return page.render("charge.html", status=status, csv_headings=CSV_HEADINGS[page.lang], **context)


@router.get("/charge")
async def charge_form(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    return _charge_page(page, form={"service_date": date.today().isoformat()})


@router.get("/charges-template.csv")
async def charges_template(request: Request) -> Response:
    """An empty month's file with the header line in the page's language, as a spreadsheet opens it."""
    page = Page(request)
    page.need(PROVIDER)
    headings = CSV_HEADINGS[page.lang]
    return spreadsheet([], list(CSV_COLUMNS), {c: headings[c] for c in CSV_COLUMNS}, "charges-template.csv")


@router.post("/charge")
async def charge(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    form = await page.check_csrf()
    values = {k: str(form.get(k, "")).strip() for k in ("voucher_code", "provider_reference", "service_date",
                                                        "units", "unit_price")}
    day = typed_date(values["service_date"])
    body: dict = {"voucher_code": values["voucher_code"], "provider_reference": values["provider_reference"],
                  "service_date": day.isoformat() if day else values["service_date"],
                  "units": values["units"].replace(",", ".")}
    price = cents_of(values["unit_price"])
    if price is not None:
        body["unit_price_cents"] = price
    try:
        done = await page.call("payments", "POST", "/charges", json=body)
    except BackendError as err:
        return _charge_page(page, status=err.status if err.status < 500 else 503, form=values,
                            error=page.error_text(err), error_details=err.details)
    return _charge_page(page, form={"service_date": values["service_date"]}, done=done)


@router.post("/charges/upload")
async def upload(request: Request) -> Response:
    page = Page(request)
    page.need(PROVIDER)
    form = await page.check_csrf()
    file = form.get("file")
    data = await file.read(MAX_CSV_BYTES + 1) if hasattr(file, "read") else b""
    if not data or len(data) > MAX_CSV_BYTES:
        return _charge_page(page, status=422, form={"service_date": date.today().isoformat()},
                            error=page.t("csv_file"))
    r = await page.raw("payments", "POST", "/charges/bulk", content=system_header(data),
                       headers={"content-type": "text/csv"})
    if r.status_code >= 400:
        err = error_of(r)
        return _charge_page(page, status=err.status if err.status < 500 else 503,
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


CHARGE_COLUMNS = ("provider_reference", "service_date", "category", "units", "unit_price_cents", "amount_cents",
                  "own_share_cents", "status", "fee_cents", "net_cents", "id", "settlement_id")
#: the headings of the provider's files, by the i18n keys that name the columns
HEADING_KEYS = {"provider_reference": "provider_reference", "service_date": "service_date", "category": "category",
                "units": "units", "unit_price_cents": "unit_price_eur_column", "amount_cents": "amount_eur_column",
                "own_share_cents": "own_share_eur_column", "status": "status", "fee_cents": "fee_eur_column",
                "net_cents": "net_eur_column", "gross_cents": "gross_eur_column", "id": "charge_id_column",
                "charge_id": "charge_id_column", "settlement_id": "settlement_id_column"}


def spreadsheet(rows: list[dict], columns: list[str], headings: dict[str, str], filename: str,
                cell=None) -> Response:  # noqa: ANN001
    """Rows as a Finnish spreadsheet opens them: UTF-8 with a byte-order mark, semicolons, CRLF."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow([headings.get(c, c) for c in columns])
    for row in rows:
        writer.writerow([(cell or _plain)(c, row.get(c)) for c in columns])
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _plain(_column: str, value: object) -> str:
    return "" if value is None else str(value)


def csv_response(page: Page, rows: list[dict], columns: tuple[str, ...], filename: str,
                 cats: list[dict] | None = None) -> Response:
    """A provider's charges or statement lines in the Finnish spreadsheet form: headings in the page's
    language, euros with a decimal comma (``27,50``, no grouping: the cell stays a number), dates as
    ``7.10.2026``, units ``1,5``, categories and statuses in words; ids last, as they are."""
    fmt = Formats(page.lang)

    def cell(column: str, value: object) -> str:
        if value is None or value == "":
            return ""
        if column.endswith("_cents"):
            return fmt.number(int(value) / 100, places=2).replace("\u00a0", "")
        if column == "units":
            return fmt.number(value).replace("\u00a0", "")
        if column == "service_date":
            return fmt.date(value)
        if column == "category":
            return category_name(cats or [], str(value), page.lang)
        if column == "status":
            return page.t.word(value)  # type: ignore[attr-defined]
        return str(value)

    headings = {c: page.t(HEADING_KEYS[c]) if c in HEADING_KEYS else c for c in columns}
    return spreadsheet(rows, list(columns), headings, filename, cell)


@router.get("/charges.csv")
async def charges_csv(request: Request) -> Response:
    page = Page(request)
    user = page.need(PROVIDER)
    try:
        items = await _charges(page)
    except BackendError as err:
        return page.render("error.html", status=503 if err.status >= 500 else err.status, message=page.error_text(err))
    return csv_response(page, items, CHARGE_COLUMNS, f"charges-{user.provider_id}.csv", await categories(page))


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
    known = [c for c in columns if c in HEADING_KEYS]
    return csv_response(page, lines, tuple(known + [c for c in columns if c not in HEADING_KEYS]),
                        f"statement-{settlement_id}.csv")
