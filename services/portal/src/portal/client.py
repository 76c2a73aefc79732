"""The client's pages: its voucher (units left this period), the comparison with its own shares for
this voucher (the vouchers service's ``GET /vouchers/{id}/providers``), choosing or switching the
provider, and feedback (the reporting service's ``POST /feedback``). Every call carries the client's
own token, bound to its one voucher: the voucher id comes from the token, never from the address."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .backend import BackendError
from .public import categories, category_name
from .formats import Formats
from .web import CLIENT, Page, small_int


def page_date(page: Page, iso: object) -> str:
    return Formats(page.lang).date(iso)

router = APIRouter(prefix="/client")


async def _view(page: Page, **extra: object) -> Response:
    user = page.need(CLIENT)
    vid = user.voucher_id
    try:
        voucher = await page.call("vouchers", "GET", f"/vouchers/{vid}")
    except BackendError as err:
        return page.render("error.html", status=err.status if err.status < 500 else 503, message=page.error_text(err))
    offers, offers_error = [], None
    try:
        offers = (await page.call("vouchers", "GET", f"/vouchers/{vid}/providers", params={"limit": 100}))["items"]
    except BackendError as err:
        offers_error = page.error_text(err)
    cats = await categories(page)
    chosen = next((o["name"] for o in offers if o["provider_id"] == voucher.get("provider_id")), None)
    return page.render("client.html", v=voucher, offers=offers, offers_error=offers_error, chosen_name=chosen,
                       category_label=category_name(cats, voucher["category"], page.lang), **extra)


@router.get("")
async def client_home(request: Request) -> Response:
    return await _view(Page(request))


@router.post("/choose")
async def choose(request: Request) -> Response:
    page = Page(request)
    user = page.need(CLIENT)
    form = await page.check_csrf()
    try:
        await page.call("vouchers", "POST", f"/vouchers/{user.voucher_id}/provider",
                        json={"provider_id": str(form.get("provider_id", ""))})
    except BackendError as err:
        return await _view(page, choose_error=page.error_text(err))
    return await _view(page, notice=page.t("provider_chosen"))


@router.post("/feedback")
async def feedback(request: Request) -> Response:
    page = Page(request)
    page.need(CLIENT)
    form = await page.check_csrf()
    rating = str(form.get("rating", ""))
    text = str(form.get("text", "")).strip()
    number = small_int(rating)
    body: dict = {"rating": rating if number is None else number}
    if text:
        body["text"] = text
    try:
        await page.call("reporting", "POST", "/feedback", json=body)
    except BackendError as err:
        if err.reason == "feedback_already_given":  # once a month: say when it was given and when the next can be
            message = page.t("feedback_already_given_on", given=page_date(page, err.details.get("given_on")),
                             next=page_date(page, err.details.get("next_from")))
        else:
            message = page.t("feedback_unavailable") if err.status in (404, 405) else page.error_text(err)
        return await _view(page, feedback_error=message)
    return await _view(page, feedback_notice=page.t("feedback_thanks"))
