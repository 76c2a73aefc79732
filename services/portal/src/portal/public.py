"""Pages anyone may see: the home page, the public comparison of a funder's approved providers (the
registry's ``GET /public/funders/{funder}/categories/{category}/providers``, the funders to choose from
``GET /public/funders``) and a provider's page (``GET /public/providers/{id}``), all without login."""
from __future__ import annotations

import re
from urllib.parse import quote
from decimal import Decimal, InvalidOperation

from fastapi import APIRouter, Request
from fastapi.responses import Response

from seteli_shared.municipalities import sorted_for

from .backend import BackendError
from .web import Page, small_int

router = APIRouter()
_FUNDER = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_MUNICIPALITY = re.compile(r"^\d{3}$")
_CATEGORY = re.compile(r"^[a-z_]{1,40}$")


def cents_of(text: str | None) -> int | None:
    """Euros typed by a person (``25``, ``25,50``, ``25.5``) as cents; None when empty or not a sum."""
    if not text or not text.strip():
        return None
    try:
        value = Decimal(text.strip().replace("\u00a0", "").replace(" ", "").replace(",", "."))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value > 1_000_000:
        return None
    return int((value * 100).to_integral_value())


async def categories(page: Page) -> list[dict]:
    cache = page.request.app.state.__dict__.setdefault("categories", [])
    if not cache:
        try:
            cache.extend(await page.backend.json("registry", "GET", "/categories"))
        except BackendError:
            return []
    return cache


def category_name(cats: list[dict], code: str, lang: str) -> str:
    for c in cats:
        if c["code"] == code:
            return c.get(f"name_{lang}") or code
    return code


@router.get("/")
async def home(request: Request) -> Response:
    page = Page(request)
    return page.render("home.html")


def comparison_query(request: Request, page: Page) -> dict:
    q = request.query_params
    funder = (q.get("funder") or page.settings.default_funder).strip().lower()
    category = (q.get("category") or "home_care").strip()
    municipality = (q.get("municipality") or "").strip()
    language = (q.get("language") or "").strip()
    sort = q.get("sort") if q.get("sort") in ("price", "own_share") else "price"
    return {"funder": funder if _FUNDER.match(funder) else page.settings.default_funder,
            "category": category if _CATEGORY.match(category) else "home_care",
            "municipality": municipality if _MUNICIPALITY.match(municipality) else "",
            "language": language if language in ("fi", "sv", "en", "se") else "",
            "sort": sort, "voucher_value": (q.get("voucher_value") or "").strip()[:12],
            "units_per_month": (q.get("units_per_month") or "").strip()[:6]}


async def compared(page: Page, f: dict, limit: int = 100) -> tuple[list[dict], str | None]:
    params: dict = {"sort": f["sort"], "limit": limit}
    if f["municipality"]:
        params["municipality"] = f["municipality"]
    if f["language"]:
        params["language"] = f["language"]
    value = cents_of(f["voucher_value"])
    if value is not None:
        params["voucher_value_cents"] = value
    units = small_int(f["units_per_month"])
    if units is not None and 0 < units <= 1000:
        params["units_per_month"] = units
    if f["sort"] == "own_share" and value is None:
        params["sort"] = "price"  # the own share needs the voucher's value
    try:
        answer = await page.backend.json(
            "registry", "GET", f"/public/funders/{f['funder']}/categories/{f['category']}/providers", params=params)
    except BackendError as err:
        return [], (None if err.status == 404 else page.error_text(err))
    return answer["items"], None


async def funders(page: Page) -> list[dict]:
    """The funders the public comparison can show (funder id, name, kind, the categories it uses); empty
    when the registry does not answer (the page then offers a field for the funder's code)."""
    try:
        return await page.backend.all_pages("registry", "/public/funders")
    except BackendError:
        return []


async def funder_names(page: Page) -> dict[str, str]:
    """funder id -> its name, for pages that would otherwise show a code."""
    return {f["funder_id"]: f["name"] for f in await funders(page)}


@router.get("/compare")
async def compare(request: Request) -> Response:
    page = Page(request)
    f = comparison_query(request, page)
    cats = await categories(page)
    items, error = await compared(page, f)
    return page.render("compare.html", f=f, categories=cats, items=items, error=error, funders=await funders(page),
                       category_label=category_name(cats, f["category"], page.lang), municipalities=sorted_for(page.lang))


@router.get("/compare/providers/{provider_id}")
async def provider_page(request: Request, provider_id: str) -> Response:
    """A provider's page (the registry's public ``GET /public/providers/{id}``): contact, languages, units,
    the municipalities it serves, and every funder's approval in force with its price; the funder and
    category the client came from first, with the own share when the voucher's value is given."""
    page = Page(request)
    f = comparison_query(request, page)
    params: dict = {}
    value = cents_of(f["voucher_value"])
    if value is not None and value <= 100_000:
        params["voucher_value_cents"] = value
    try:
        p = await page.backend.json("registry", "GET", f"/public/providers/{quote(provider_id, safe='')}",
                                    params=params)
    except BackendError as err:
        not_found = err.status in (404, 422)
        return page.render("error.html", status=404 if not_found else 503,
                           message=page.t("not_found") if not_found else page.error_text(err))
    cats = await categories(page)
    chosen = next((a for a in p["approvals"] if (a["funder_id"], a["category"]) == (f["funder"], f["category"])),
                  None)
    for a in p["approvals"]:
        a["category_label"] = category_name(cats, a["category"], page.lang)
    return page.render("provider_public.html", f=f, p=p, chosen=chosen,
                       category_label=category_name(cats, f["category"], page.lang))
