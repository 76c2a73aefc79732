"""Funder staff's and the operator's pages.

Funder staff (bound to their funder by the token): applications to decide, vouchers issued, the
monitoring report with its charts (reporting's monthly report and charts; figures always), client
feedback, and the audit trail of the registry, vouchers and payments. The operator: settlement runs
(and running one), their payment files and recording the bank's execution of them, open recovery claims,
the ledger check, and dead-lettered messages. Charts are fetched by the portal
with the user's token and passed on (the browser never holds a bearer token)."""
from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .backend import BackendError, dead_letter_counts, error_of
from .formats import Formats, typed_date
from .public import categories, category_name
from .web import FUNDER, OPERATOR, Page

router = APIRouter()
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
CHARTS = {"price-development.svg": "image/svg+xml", "price-development.png": "image/png",
          "monthly-volume.svg": "image/svg+xml", "monthly-volume.png": "image/png"}


# ---------------------------------------------------------------- funder staff
@router.get("/funder")
async def funder_home(request: Request) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    figures, error = None, None
    try:
        figures = await page.call("reporting", "GET", f"/funders/{user.funder_id}/figures")
    except BackendError as err:
        error = page.error_text(err)
    return page.render("funder.html", figures=figures, error=error)


@router.get("/funder/applications")
async def applications(request: Request, notice: str | None = None, error: str | None = None) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    items: list = []
    try:
        items = await page.pages("registry", "/applications",
                                             params={"funder_id": user.funder_id, "status": "submitted"})
    except BackendError as err:
        error = page.error_text(err)
    cats = await categories(page)
    return page.render("applications.html", items=items, notice=notice, error=error,
                       cat=lambda code: category_name(cats, code, page.lang))


@router.post("/funder/applications/{application_id}/{decision}")
async def decide(request: Request, application_id: str, decision: str) -> Response:
    page = Page(request)
    page.need(FUNDER)
    form = await page.check_csrf()
    if decision not in ("approve", "reject"):
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    body = None
    if decision == "reject":  # the written grounds the provider reads; registry refuses a rejection without
        body = {"reason": "not_eligible", "grounds": str(form.get("grounds", "")).strip()}
    try:
        await page.call("registry", "POST", f"/applications/{application_id}/{decision}", json=body)
    except BackendError as err:
        return await applications(request, error=page.error_text(err))
    return await applications(request, notice=page.t("decided"))


@router.get("/funder/providers")
async def funder_providers(request: Request, notice: str | None = None, error: str | None = None) -> Response:
    """The providers the funder has approved, each approval with its state and the grounds of its
    suspension or revocation, and the forms to suspend, reinstate or revoke it (with written grounds)."""
    page = Page(request)
    user = page.need(FUNDER)
    approvals: list = []
    try:
        for p in await page.pages("registry", "/providers", params={"funder_id": user.funder_id}, most=500):
            approvals += [(p, a) for a in p.get("approvals", []) if a["funder_id"] == user.funder_id]
    except BackendError as err:
        error = error or page.error_text(err)
    cats = await categories(page)
    return page.render("funder_providers.html", approvals=approvals, notice=notice, error=error,
                       today=date.today().isoformat(), cat=lambda code: category_name(cats, code, page.lang))


_APPROVAL_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


@router.post("/funder/approvals/{approval_id}/{change}")
async def change_approval(request: Request, approval_id: str, change: str) -> Response:
    """Suspend or revoke (``change``, with the form's ``action``) from a date with written grounds, or
    reinstate: the registry decides and refuses grounds of less than a sentence."""
    page = Page(request)
    page.need(FUNDER)
    form = await page.check_csrf()
    action = str(form.get("action", "")) if change == "change" else change
    if not _APPROVAL_ID.match(approval_id) or action not in ("suspend", "revoke", "reinstate"):
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    body: dict | None = None
    if action != "reinstate":
        day = typed_date(str(form.get("effective_from", "")))
        if day is None:
            return await funder_providers(request, error=page.t("bad_date"))
        body = {"reason": "funder_decision", "effective_from": day.isoformat(),
                "grounds": str(form.get("grounds", "")).strip()}
    try:
        await page.call("registry", "POST", f"/approvals/{approval_id}/{action}", json=body)
    except BackendError as err:
        return await funder_providers(request, error=page.error_text(err))
    return await funder_providers(request, notice=page.t("decided"))


@router.get("/funder/vouchers")
async def vouchers(request: Request) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    try:
        items = await page.pages("vouchers", "/vouchers", most=500)
    except BackendError as err:
        return page.render("error.html", status=err.status if err.status < 500 else 503, message=page.error_text(err))
    cats = await categories(page)
    return page.render("vouchers.html", items=items, cat=lambda code: category_name(cats, code, page.lang))


_INVOICE_ID = re.compile(r"^[0-9a-f-]{36}$")
#: the documents of an invoice the portal passes on: payments' format, the media type, the file's ending
INVOICE_DOCUMENTS = {"pdf": ("pdf", "application/pdf", "pdf"), "finvoice": ("finvoice", "application/xml", "xml")}


@router.get("/funder/invoices")
async def invoices(request: Request) -> Response:
    """The funder's invoices and credit notes as payments issued them, each with its PDF and Finvoice."""
    page = Page(request)
    page.need(FUNDER)
    try:
        items = await page.call("payments", "GET", "/funder-invoices")
    except BackendError as err:
        return page.render("error.html", status=err.status if err.status < 500 else 503, message=page.error_text(err))
    return page.render("invoices.html", items=items)


@router.get("/funder/invoices/{invoice_id}/{document}")
async def invoice_document(request: Request, invoice_id: str, document: str) -> Response:
    """An invoice's PDF or Finvoice 3.0 e-invoice, as payments makes it (with the user's token)."""
    page = Page(request)
    page.need(FUNDER)
    if not _INVOICE_ID.match(invoice_id) or document not in INVOICE_DOCUMENTS:
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    fmt, media, ending = INVOICE_DOCUMENTS[document]
    r = await page.raw("payments", "GET", f"/funder-invoices/{invoice_id}?format={fmt}")
    if r.status_code != 200:
        return page.render("error.html", status=r.status_code if r.status_code < 500 else 503,
                           message=page.error_text(error_of(r)))
    disposition = r.headers.get("content-disposition") or f'attachment; filename="invoice-{invoice_id}.{ending}"'
    return Response(r.content, media_type=media, headers={"Content-Disposition": disposition})


def _period(request: Request) -> str:
    p = request.query_params.get("period", "")
    return p if _PERIOD.match(p) else date.today().strftime("%Y-%m")


@router.get("/funder/report")
async def report(request: Request) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    period = _period(request)
    category = request.query_params.get("category", "home_care")
    category = category if re.match(r"^[a-z_]{0,40}$", category) else "home_care"  # empty: every category
    monthly = feedback = figures = None
    report_error = None
    try:
        monthly = await page.call("reporting", "GET", f"/funders/{user.funder_id}/reports/monthly",
                                  params={"period": period})
    except BackendError as err:
        report_error = page.t("report_not_available") + ("" if err.status in (404, 405) else
                                                         f" ({page.t('support_code')}: {err.reason})")
    try:
        feedback = await page.call("reporting", "GET", f"/funders/{user.funder_id}/feedback",
                                   params={"period": period})
    except BackendError:
        feedback = None
    try:
        figures = await page.call("reporting", "GET", f"/funders/{user.funder_id}/figures")
    except BackendError:
        figures = None
    cats = await categories(page)
    return page.render("report.html", period=period, category=category, monthly=monthly, report_error=report_error,
                       feedback=feedback, figures=figures, categories=cats,
                       cat=lambda code: category_name(cats, code, page.lang))


@router.get("/funder/report.csv")
async def report_csv(request: Request) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    # the Finnish spreadsheet form (semicolons, decimal commas, a byte-order mark), in the page's language
    r = await page.raw("reporting", "GET", f"/funders/{user.funder_id}/reports/monthly.csv",
                       params={"period": _period(request), "format": "spreadsheet", "lang": page.lang})
    if r.status_code != 200:
        return page.render("error.html", status=404 if r.status_code in (404, 405) else r.status_code,
                           message=page.t("report_not_available"))
    return Response(r.content, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="report-{user.funder_id}-{_period(request)}.csv"'})


@router.get("/funder/report/audit.json")
async def report_audit(request: Request) -> Response:
    """The reporting service's audit of the month's suppression, for the funder's statistician."""
    page = Page(request)
    user = page.need(FUNDER)
    r = await page.raw("reporting", "GET", f"/funders/{user.funder_id}/reports/monthly/audit",
                       params={"period": _period(request)})
    if r.status_code != 200:
        return page.render("error.html", status=404 if r.status_code in (404, 405) else r.status_code,
                           message=page.t("report_not_available"))
    return Response(r.content, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="audit-{user.funder_id}-{_period(request)}.json"'})


@router.get("/funder/charts/{name}")
async def chart(request: Request, name: str) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    if name not in CHARTS:
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    params = {"lang": page.lang}
    category = request.query_params.get("category")
    if name.startswith("price-development") and category and re.match(r"^[a-z_]{1,40}$", category):
        params["category"] = category
    r = await page.raw("reporting", "GET", f"/funders/{user.funder_id}/charts/{name}", params=params)
    if r.status_code != 200 or not r.headers.get("content-type", "").startswith(CHARTS[name]):
        return Response(status_code=404 if r.status_code < 500 else 503)
    return Response(r.content, media_type=CHARTS[name], headers={"Cache-Control": "private, max-age=60"})


@router.get("/funder/audit")
async def audit(request: Request) -> Response:
    page = Page(request)
    user = page.need(FUNDER)
    return await _audit(page, user.token, "funder_home")


async def _audit(page: Page, token: str, back: str) -> Response:
    entries, errors = [], []
    for service in ("registry", "vouchers", "payments"):
        try:
            for e in (await page.call(service, "GET", "/audit", params={"limit": 200}))["items"]:
                entries.append({**e, "service": service})
        except BackendError as err:
            errors.append(f"{service}: {page.error_text(err)}")
    entries.sort(key=lambda e: e.get("at") or "", reverse=True)
    return page.render("audit.html", entries=entries[:300], errors=errors, back=back)


# ---------------------------------------------------------------- the operator
async def _operator_view(page: Page, **extra: object) -> Response:
    runs, ledger, errors = [], None, []
    try:
        runs = (await page.call("payments", "GET", "/settlement-runs", params={"limit": 20}))["items"]
    except BackendError as err:
        errors.append(page.error_text(err))
    try:
        ledger = await page.call("payments", "GET", "/ledger/check")
    except BackendError as err:
        errors.append(page.error_text(err))
    claims: list = []
    try:
        claims = (await page.call("payments", "GET", "/recovery-claims", params={"open": "true", "limit": 50}))["items"]
    except BackendError as err:
        errors.append(page.error_text(err))
    try:
        dead = await dead_letter_counts(page.settings)
    except Exception:  # noqa: BLE001  (the broker did not answer: say so, show the rest)
        dead, errors = None, [*errors, page.t("service_unavailable")]
    return page.render("operator.html", runs=runs, ledger=ledger, errors=errors, dead_letters=dead, claims=claims,
                       today=date.today().isoformat(), **extra)


@router.get("/operator")
async def operator_home(request: Request) -> Response:
    page = Page(request)
    page.need(OPERATOR)
    return await _operator_view(page)


@router.post("/operator/settlements/run")
async def run_settlement(request: Request) -> Response:
    page = Page(request)
    page.need(OPERATOR)
    await page.check_csrf()
    try:
        done = await page.call("payments", "POST", "/settlements/run")
    except BackendError as err:
        return await _operator_view(page, run_error=page.error_text(err))
    return await _operator_view(page, notice=page.t("settlement_done", n=len(done or [])))


_RUN_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


@router.post("/operator/settlement-runs/{run_id}/execution")
async def record_execution(request: Request, run_id: str) -> Response:
    """The bank executed the run's payment file (the day from the form): payments books the payouts out."""
    page = Page(request)
    page.need(OPERATOR)
    form = await page.check_csrf()
    if not _RUN_ID.match(run_id):
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    day = typed_date(str(form.get("executed_on", "")))
    if day is None:
        return await _operator_view(page, run_error=page.t("bad_date"))
    try:
        await page.call("payments", "POST", f"/settlement-runs/{run_id}/execution",
                        json={"executed_on": day.isoformat()})
    except BackendError as err:
        return await _operator_view(page, run_error=page.error_text(err))
    return await _operator_view(page, notice=page.t("bank_payment_recorded", day=Formats(page.lang).date(day)))


@router.get("/operator/settlement-runs/{run_id}/payment-file")
async def payment_file(request: Request, run_id: str) -> Response:
    """The run's pain.001 file for the bank, as payments makes it."""
    page = Page(request)
    page.need(OPERATOR)
    if not _RUN_ID.match(run_id):
        return page.render("error.html", status=404, message=page.t("page_not_found"))
    r = await page.raw("payments", "GET", f"/settlement-runs/{run_id}/payment-file")
    if r.status_code != 200:
        return page.render("error.html", status=404 if r.status_code == 404 else 409,
                           message=page.error_text(error_of(r)))
    return Response(r.content, media_type="application/xml", headers={
        "Content-Disposition": f'attachment; filename="pain001-{run_id}.xml"'})


@router.get("/operator/audit")
async def operator_audit(request: Request) -> Response:
    page = Page(request)
    user = page.need(OPERATOR)
    return await _audit(page, user.token, "operator_home")
