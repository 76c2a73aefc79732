"""Registry HTTP API of prices: providers' price lists, the funders' decisions on them, and the
public comparison of a funder's providers (no login). Parse, authorise, call a use case, answer."""
from __future__ import annotations

import json
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from seteli_shared.auth import (FUNDER_STAFF, PROVIDER_ROLES, Principal, Role, ensure_visible, require)
from seteli_shared.clock import ClockDep
from seteli_shared.errors import DomainError
from seteli_shared.events import FunderId
from seteli_shared.schemas import BusinessDate, Cents, Page, PageDep, RequestModel, Units
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import price_usecases as usecases
from . import domain, prices
from .price_models import PriceList

router = APIRouter()
UnitPrice = Annotated[Cents, Field(description="whole cents per unit; above 0, at most "
                                           f"{prices.MAX_UNIT_PRICE_CENTS}")]


class TariffsIn(RequestModel):
    """Time-of-day prices that override the base price, cents per unit; each optional."""

    weekday: UnitPrice | None = None
    weekday_evening: UnitPrice | None = None
    saturday: UnitPrice | None = None
    sunday: UnitPrice | None = None


class PriceListCreate(RequestModel):
    funder_id: FunderId
    category: str = Field(max_length=40, description="a service category the funder uses")
    unit_price_cents: UnitPrice
    tariffs: TariffsIn | None = None
    effective_from: BusinessDate = Field(description="today at the earliest")


class PriceListPublic(BaseModel):
    id: str
    provider_id: str
    funder_id: str
    category: str
    unit: str
    unit_price_cents: int
    tariffs: dict[str, int]
    effective_from: date
    status: prices.PriceListStatus
    created_at: datetime
    decided_at: datetime | None
    published_at: datetime | None
    grounds: str | None = Field(default=None, description="a rejection's written grounds, for the provider")

    @classmethod
    def of(cls, p: PriceList) -> "PriceListPublic":
        return cls(id=p.id, provider_id=p.provider_id, funder_id=p.funder_id, category=p.category, unit=p.unit,
                   unit_price_cents=p.unit_price_cents, tariffs=usecases.tariffs_of(p),
                   effective_from=p.effective_from, status=p.status, created_at=p.created_at,
                   decided_at=p.decided_at, published_at=p.published_at, grounds=p.grounds)


class PriceListRejection(RequestModel):
    grounds: domain.GroundsText | None = Field(
        default=None, description="the funder's written grounds, shown to the provider (required: 422 "
                                  "``grounds_required`` without, or with fewer than 10 characters)")


@router.post("/providers/{provider_id}/price-lists", status_code=201, response_model=PriceListPublic,
             tags=["prices"], responses=error_responses(422))
async def create_price_list(
    provider_id: str, body: PriceListCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.PROVIDER_MANAGER, scope="path")],
) -> PriceListPublic:
    """The provider's price for a funder and service category from a date. Published at once
    (``PriceListPublished``), or ``pending_approval`` when the funder's rulebook wants price changes
    approved. Earlier lists stay: the price in force on a day is the latest published list from
    that day or before. Refusals (422): ``invalid_price``, ``price_too_high``, ``unknown_category``,
    ``category_not_used_by_funder``, ``provider_not_approved``, ``effective_date_in_past``,
    ``unknown_funder``."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    tariffs = body.tariffs.model_dump() if body.tariffs else {}
    price_list = await usecases.create_price_list(sessions, clock, principal, provider_id, usecases.PriceAsked(
        body.funder_id, body.category, body.unit_price_cents, tariffs, body.effective_from))
    return PriceListPublic.of(price_list)


@router.get("/providers/{provider_id}/price-lists", response_model=Page[PriceListPublic], tags=["prices"])
async def list_price_lists(
    provider_id: str, sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_ROLES, scope="register")],
    funder_id: Annotated[str | None, Query(max_length=40)] = None,
    category: Annotated[str | None, Query(max_length=40)] = None,
    status: prices.PriceListStatus | None = None,
) -> Page[PriceListPublic]:
    """The provider's whole price history (every list, published, pending or rejected), in the order
    they were made: the provider's own staff and operator staff see all of it, funder staff the lists
    for their funder."""
    ensure_visible(principal, "provider", provider_id=provider_id, all_funders=True)
    lists, cursor = await usecases.price_lists_page(sessions, principal, provider_id, page, funder_id=funder_id,
                                                    category=category, status=status.value if status else None)
    return Page(items=[PriceListPublic.of(p) for p in lists], next_cursor=cursor)


async def _decide(sessions, clock, principal, price_list_id: str, decision: prices.Decision,  # noqa: ANN001
                  grounds: str | None = None) -> PriceListPublic:
    price_list, _ = await usecases.decide_price_list(sessions, clock, principal, price_list_id, decision, grounds)
    return PriceListPublic.of(price_list)


@router.post("/price-lists/{price_list_id}/approve", response_model=PriceListPublic, tags=["prices"],
             responses=error_responses(409, 422))
async def approve_price_list(
    price_list_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="path")],
) -> PriceListPublic:
    """The funder approves a pending price list: it is published (``PriceListPublished``). Approving
    again changes nothing; a rejected list is 409 ``price_list_not_pending``; a list that would
    reach into a settled month is 422 ``effective_date_in_past``."""
    return await _decide(sessions, clock, principal, price_list_id, prices.Decision.APPROVE)


@router.post("/price-lists/{price_list_id}/reject", response_model=PriceListPublic, tags=["prices"],
             responses=error_responses(409, 422))
async def reject_price_list(
    price_list_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="path")],
    body: PriceListRejection | None = None,
) -> PriceListPublic:
    """The funder rejects a pending price list with written grounds the provider reads (422
    ``grounds_required`` without): it never takes effect (it stays in the history). Rejecting again
    changes nothing; a published list is 409 ``price_list_not_pending``."""
    return await _decide(sessions, clock, principal, price_list_id, prices.Decision.REJECT,
                         body.grounds if body else None)


# ------------------------------------------------------------------ the public comparison
class SortBy(StrEnum):
    PRICE = "price"
    OWN_SHARE = "own_share"
    NAME = "name"


class ServiceUnitPublic(BaseModel):
    name: str
    street_address: str
    postal_code: str
    municipality_code: str


class PriceInForce(BaseModel):
    price_list_id: str
    unit: str
    unit_price_cents: int
    tariffs: dict[str, int]
    effective_from: date


class ComparedProvider(BaseModel):
    provider_id: str
    name: str
    contact_email: str | None
    contact_phone: str | None
    languages: list[str]
    service_units: list[ServiceUnitPublic]
    #: null when the provider has no published price in force on the date (it is listed last)
    price: PriceInForce | None
    #: with ``voucher_value_cents``: max(0, price - voucher value)
    own_share_cents_per_unit: int | None = None
    #: with ``voucher_value_cents`` and ``units_per_month``: the own share per unit times the units, rounded once
    own_share_cents_per_month: int | None = None



def compared_json(c: usecases.Compared) -> dict:
    """One provider of the comparison as ``ComparedProvider`` says, built directly: the page is
    serialised once, without validating again what the query gave (the API fuzz checks the shape)."""
    price = None if c.price_list_id is None else {
        "price_list_id": c.price_list_id, "unit": c.unit, "unit_price_cents": c.unit_price_cents,
        "tariffs": c.tariffs, "effective_from": c.effective_from.isoformat()}
    return {"provider_id": c.provider_id, "name": c.name, "contact_email": c.contact_email,
            "contact_phone": c.contact_phone, "languages": c.languages, "service_units": c.service_units,
            "price": price, "own_share_cents_per_unit": c.own_share_cents_per_unit,
            "own_share_cents_per_month": c.own_share_cents_per_month}


@router.get("/public/funders/{funder_id}/categories/{category}/providers", response_model=Page[ComparedProvider],
            tags=["public"])
async def compare_providers(
    sessions: SessionsDep, clock: ClockDep, page: PageDep,
    funder_id: Annotated[str, Path(max_length=40)],
    category: Annotated[str, Path(max_length=40)],
    municipality: Annotated[str | None, Query(pattern=r"^[0-9]{3}$", description="a municipality code: "
                                              "providers with a service unit there or serving it")] = None,
    language: Annotated[str | None, Query(pattern=r"^[a-z]{2}$", description="ISO 639-1, e.g. sv")] = None,
    voucher_value_cents: Annotated[Cents | None, Query(ge=0, le=prices.MAX_UNIT_PRICE_CENTS,
                                                     description="the voucher's value per unit")] = None,
    units_per_month: Annotated[Units | None, Query(ge=0, le=10000)] = None,
    sort: SortBy = SortBy.PRICE,
    on: Annotated[BusinessDate | None, Query(alias="date", description="the day whose prices count; today by "
                                                                 "default")] = None,
) -> Response:
    """Public, no login: the providers a funder has approved for a service category (not suspended on
    the date), each with its contact, languages, service units and price in force, and the client's
    own share when a voucher's value is given. Ordered by ``sort`` (``own_share`` needs
    ``voucher_value_cents``), then by provider id; a provider with no price in force comes last."""
    prices.check_category(category)
    if sort is SortBy.OWN_SHARE and voucher_value_cents is None:
        raise DomainError("voucher_value_required", "sorting by own share needs voucher_value_cents")
    comparison = usecases.Comparison(funder_id=funder_id, category=category, on=on or clock.today(),
                                     sort=sort.value, municipality=municipality, language=language,
                                     voucher_value_cents=voucher_value_cents, units_per_month=units_per_month)
    items, cursor = await usecases.compare(sessions, comparison, page)
    return Response(json.dumps({"items": [compared_json(c) for c in items], "next_cursor": cursor},
                               ensure_ascii=False, separators=(",", ":")).encode(), media_type="application/json")


# ------------------------------------------------------------------ public pages of one provider and the funders
class PublicApproval(BaseModel):
    funder_id: str
    #: null only for an approval by a funder the registry no longer knows by name
    funder_name: str | None
    category: str
    unit: str
    approved_at: datetime
    #: the published price in force on the date for this funder and category; null when there is none
    price: PriceInForce | None
    #: with ``voucher_value_cents``: max(0, price - voucher value); null without it or without a price
    own_share_cents_per_unit: int | None = None


class PublicProvider(BaseModel):
    """What anyone may see of an approved provider: no account (IBAN, BIC), no insurance policies, no
    supervisory register number, nothing of its applications or of the funders' notes on it."""

    provider_id: str
    name: str
    business_id: str
    contact_email: str | None
    contact_phone: str | None
    languages: list[str]
    #: 3-digit codes of the municipalities it serves (besides those of its service units)
    municipalities: list[str]
    service_units: list[ServiceUnitPublic]
    #: its approvals in force on the date, by funder and category
    approvals: list[PublicApproval]


@router.get("/public/providers/{provider_id}", response_model=PublicProvider, tags=["public"],
            responses=error_responses(404))
async def public_provider(
    sessions: SessionsDep, clock: ClockDep,
    provider_id: Annotated[str, Path(max_length=64)],
    on: Annotated[BusinessDate | None, Query(alias="date", description="the day whose approvals and prices count; "
                                                                 "today by default")] = None,
    voucher_value_cents: Annotated[Cents | None, Query(ge=0, le=prices.MAX_UNIT_PRICE_CENTS,
                                                     description="a voucher's value per unit")] = None,
) -> PublicProvider:
    """Public, no login: one provider's page as a client comparing providers sees it: name, business
    ID, contact, languages, service units, the municipalities it serves, and each approval in force on
    the date (funder and category) with its price in force, tariffs included, and the client's own
    share per unit when a voucher's value is given. A provider that no funder
    has in its register on the date is 404 ``provider_not_found``, as is an unknown one."""
    found = await usecases.public_provider(sessions, provider_id, on or clock.today(), voucher_value_cents)
    return PublicProvider(
        provider_id=found.provider_id, name=found.name, business_id=found.business_id,
        contact_email=found.contact_email, contact_phone=found.contact_phone, languages=found.languages,
        municipalities=found.municipalities,
        service_units=[ServiceUnitPublic(**u) for u in found.service_units],
        approvals=[PublicApproval(funder_id=a.funder_id, funder_name=a.funder_name, category=a.category,
                                  unit=a.unit, approved_at=a.approved_at,
                                  price=PriceInForce(**a.price) if a.price else None,
                                  own_share_cents_per_unit=a.own_share_cents_per_unit) for a in found.approvals])


class PublicFunder(BaseModel):
    funder_id: str
    name: str
    kind: str
    #: the service categories it has published a rulebook for (it approves providers for these)
    categories: list[str]


@router.get("/public/funders", response_model=Page[PublicFunder], tags=["public"])
async def public_funders(sessions: SessionsDep, page: PageDep) -> Page[PublicFunder]:
    """Public, no login: the registered funders in the order of their codes, each with the service
    categories it uses (has a published rulebook for): what the public comparison can be asked for.
    Nothing of their contracts (fee rate, settlement days, deadlines) is shown."""
    funders, cursor = await usecases.public_funders(sessions, page)
    return Page(items=[PublicFunder(funder_id=f.funder_id, name=f.name, kind=f.kind, categories=f.categories)
                       for f in funders], next_cursor=cursor)
