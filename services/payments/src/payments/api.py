"""Payments HTTP API: charges, settlements, the ledger. Parse, authorise, call a use case (``usecases``)."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from seteli_shared.auth import (PROVIDER_STAFF, Principal, Role, TenantScope, acting_for_provider, ensure_visible,
                                require, tenant_scope)
from seteli_shared.clock import ClockDep
from seteli_shared.events import Category
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.schemas import BusinessDate, Cents, Page, PageDep, RequestModel, Units
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import domain, intake, payouts, usecases
from .models import Charge

router = APIRouter()
#: who may read charges and settlements (each only its own tenant's)
READERS = (Role.OPERATOR, Role.FUNDER_FINANCE, Role.FUNDER_REPORTING, *PROVIDER_STAFF, Role.PROVIDER_BILLING_SYSTEM)


class Tariff(StrEnum):
    WEEKDAY = "weekday"
    WEEKDAY_EVENING = "weekday_evening"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


assert tuple(Tariff) == domain.TARIFFS


class ChargeCreate(RequestModel):
    voucher_id: str | None = Field(default=None, min_length=1, max_length=64)
    voucher_code: str | None = Field(default=None, min_length=1, max_length=32,
                                     description="the code the client gave the provider, instead of voucher_id "
                                     "(only the provider the client chose finds the voucher by it)")
    provider_id: str | None = Field(default=None, description="defaults to the caller's provider")
    provider_reference: str = Field(min_length=1, max_length=100,
                                    description="the provider's own reference; a retry with it is safe")
    service_date: BusinessDate
    units: Units = Field(gt=0, le=10000)
    unit_price_cents: Cents | None = Field(
        default=None, gt=0, le=10_000_000,
        description="the provider's price per unit, at most its registered price for the service date; defaults "
                    "to the registered price (of the tariff, if given), or to the voucher value when the provider "
                    "has no price list in force on that date")
    tariff: Tariff | None = Field(default=None, description="which price of the provider's price list applies "
                                  "(its base price when the list has no price for this tariff)")
    category: Category | None = Field(default=None, description="a personal budget's: which of its categories the "
                                      "service is (default: the voucher's category); other vouchers: only their own")

    @model_validator(mode="after")
    def _one_voucher(self) -> "ChargeCreate":
        if (self.voucher_id is None) == (self.voucher_code is None):
            raise ValueError("name the voucher by voucher_id or by voucher_code (one of them)")
        return self


class ChargePublic(BaseModel):
    id: str
    voucher_id: str
    funder_id: str
    provider_id: str
    category: str
    provider_reference: str
    service_date: date
    units: Decimal
    unit_price_cents: int
    amount_cents: int
    own_share_cents: int
    tariff: str | None = None
    price_registered: bool = Field(description="whether the provider had a price list in force on the service "
                                   "date; false: none was found, the price is the one sent or the voucher value")
    registered_price_cents: int | None = Field(default=None, description="the registered price the charge was "
                                               "checked against")
    price_list_id: str | None = None
    client_fee_cents: int | None = Field(default=None, description="a client voucher's charge: the client's fixed "
                                         "fee (per unit) for these units, owed to the funder, not the provider")
    status: str
    accepted_at: datetime
    settlement_id: str | None
    fee_cents: int | None
    net_cents: int | None
    corrected_units: Decimal = Field(default=Decimal("0.00"), description="units corrections after settlement "
                                     "took off the charge (`GET /charges/{id}/corrections`)")
    corrected_amount_cents: int = Field(default=0, description="the funder's amount corrections took off")

    @classmethod
    def of(cls, c: Charge) -> "ChargePublic":
        return cls(**c.model_dump(exclude={"units_x100", "corrected_units_x100"}), units=from_hundredths(c.units_x100),
                   corrected_units=from_hundredths(c.corrected_units_x100 or 0))


class SettlementPublic(BaseModel):
    id: str
    funder_id: str
    provider_id: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    fee_rate: str
    created_at: datetime


class SettlementDetail(SettlementPublic):
    charges: list[ChargePublic]


class ChargeStatus(StrEnum):
    ACCEPTED = domain.ACCEPTED
    SETTLED = domain.SETTLED
    CANCELLED = "cancelled"


async def idempotency_key(request: Request, key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=200, description=(
            "the same key with the same body answers the first answer again (another body: 422 "
            "`idempotency_key_reused`; while the first is answered: 409 `request_in_flight`); kept per caller "
            "for `IDEMPOTENCY_RETENTION_HOURS` (24) hours, as a keyed hash (never the key itself), then purged"))
        ] = None) -> intake.IdempotencyKey | None:
    """The caller's Idempotency-Key, at once in the only form payments keeps (``intake.IdempotencyKey``)."""
    if key is None:
        return None
    settings = request.app.state.settings
    return intake.IdempotencyKey.of(key, settings.idempotency_key_secret,
                                    timedelta(hours=settings.idempotency_retention_hours))


IdempotencyKeyHeader = Annotated[intake.IdempotencyKey | None, Depends(idempotency_key)]


@router.post("/charges", status_code=201, response_model=ChargePublic, tags=["charges"], responses={
    200: {"model": ChargePublic, "description": "a retry with the same provider reference (or Idempotency-Key): "
          "the first charge"},
    **error_responses(404, 409, 422)})
async def charge_voucher(
    body: ChargeCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM, scope="body")],
    idempotency_key: IdempotencyKeyHeader = None,
) -> ChargePublic:
    """A provider charges a voucher for a delivered service. Refusals are 4xx with a reason, among them
    422 `provider_suspended` / `provider_revoked` for a service delivered on or after the date its
    approval was suspended or revoked from (earlier services may still be charged),
    `price_above_registered_price` (the registered price in `details`) and `tariff_not_available`
    (a tariff asked for when no price list is in force on the service date). The answer says whether
    a registered price was found (`price_registered`)."""
    provider_id = acting_for_provider(principal, body.provider_id)
    req = domain.ChargeRequest(provider_id, body.service_date, to_hundredths(body.units), body.unit_price_cents,
                               body.tariff.value if body.tariff else None, body.category)
    if idempotency_key is not None or body.voucher_code is not None:  # charge intake (intake_api)
        from . import intake_api
        return await intake_api.charge_once(
            sessions, clock, principal, provider_id, idempotency_key, body,
            lambda: intake.charge_by_id_or_code(sessions, clock, principal, body.voucher_id, body.voucher_code,
                                                body.provider_reference, req))
    charge, new = await usecases.charge_voucher(sessions, clock, principal, body.voucher_id,
                                                body.provider_reference, req)
    # the answer as it is: FastAPI would check a ChargePublic against ChargePublic once more
    return JSONResponse(ChargePublic.of(charge).model_dump(mode="json"), status_code=201 if new else 200)


@router.get("/charges", response_model=Page[ChargePublic], tags=["charges"])
async def list_charges(
    sessions: SessionsDep, page: PageDep, scope: Annotated[TenantScope, tenant_scope(*READERS)],
    voucher_id: str | None = None, status: ChargeStatus | None = None,
    service_date_from: BusinessDate | None = None, service_date_to: BusinessDate | None = None,
    provider_id: str | None = None, funder_id: str | None = None,
) -> Page[ChargePublic]:
    """Charges in the order they were accepted: operator staff see all, a funder's staff their funder's,
    a provider's staff and systems their provider's (whatever the query asks)."""
    f = usecases.ChargeFilter(voucher_id=voucher_id, status=status.value if status else None,
                              service_date_from=service_date_from, service_date_to=service_date_to,
                              funder_id=funder_id, provider_id=provider_id)
    charges, cursor = await usecases.charges_page(sessions, scope, f, page)
    return Page(items=[ChargePublic.of(c) for c in charges], next_cursor=cursor)


@router.get("/charges/{charge_id}", response_model=ChargePublic, tags=["charges"])
async def get_charge(
    charge_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> ChargePublic:
    charge = await usecases.get_charge(sessions, charge_id)
    ensure_visible(principal, "charge", funder_id=charge.funder_id, provider_id=charge.provider_id)
    return ChargePublic.of(charge)


@router.post("/settlements/run", response_model=list[SettlementPublic], tags=["settlements"])
async def run_settlement(
    request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> list[SettlementPublic]:
    """Settle all accepted charges now: one settlement per provider and funder, the fee at the funder's
    contract rate (the configured ``operator_fee_rate`` for a funder payments has not heard of)."""
    made = (await payouts.run_settlements(sessions, clock, principal, request.app.state.settings,
                                          hold_back=False)).settlements
    return [SettlementPublic(**s.model_dump()) for s in made]


@router.get("/settlements", response_model=Page[SettlementPublic], tags=["settlements"])
async def list_settlements(
    sessions: SessionsDep, page: PageDep, scope: Annotated[TenantScope, tenant_scope(*READERS)],
    provider_id: str | None = None, funder_id: str | None = None,
) -> Page[SettlementPublic]:
    """Settlements in the order they were made: a funder's staff see their funder's, a provider's staff
    their provider's (whatever the query asks)."""
    settlements, cursor = await usecases.settlements_page(sessions, scope, page,
                                                          funder_id=funder_id, provider_id=provider_id)
    return Page(items=[SettlementPublic(**s.model_dump()) for s in settlements], next_cursor=cursor)


@router.get("/settlements/{settlement_id}", response_model=SettlementDetail, tags=["settlements"])
async def get_settlement(
    settlement_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> SettlementDetail:
    s, charges = await usecases.get_settlement(sessions, settlement_id)
    ensure_visible(principal, "settlement", funder_id=s.funder_id, provider_id=s.provider_id)
    return SettlementDetail(**s.model_dump(), charges=[ChargePublic.of(c) for c in charges])


@router.get("/ledger/balances", tags=["ledger"])
async def ledger_balances(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict[str, int]:
    """Balance of every account in cents (debit positive)."""
    async with sessions() as session:
        return await usecases.balances(session)


@router.get("/ledger/check", tags=["ledger"])
async def ledger_check(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict:
    """The ledger's invariants: entries sum to zero and every transaction balances, no voucher charged
    beyond its entitlement in any period, settled = charges minus fees (each settlement its charges' sums)."""
    async with sessions() as session:
        return await usecases.ledger_check(session)
