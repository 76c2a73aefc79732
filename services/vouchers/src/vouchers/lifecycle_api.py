"""Routes of the voucher's life cycle: the client's comparison of providers and the daily expiry job."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from seteli_shared.auth import FUNDER_STAFF, Principal, Role, require
from seteli_shared.clock import SYSTEM_CLOCK, ClockDep
from seteli_shared.schedule import daily
from seteli_shared.schemas import Page, PageDep
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import lifecycle

@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The daily expiry job runs in the service at ``EXPIRY_DAILY_AT`` (UTC; in tests only when asked), once
    across the service's instances."""
    settings, tasks = app.state.settings, []
    if settings.schedules_expiry:
        clock = getattr(app.state, "clock", None) or SYSTEM_CLOCK
        sessions = app.state.runtime.sessions
        tasks.append(asyncio.create_task(daily("vouchers.expire", settings.expiry_daily_at, clock,
                                               lambda: lifecycle.expire_vouchers(sessions, clock)),
                                         name="expiry-scheduler"))
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


router = APIRouter(tags=["vouchers"], lifespan=lifespan)


class ProviderOffer(BaseModel):
    """A provider the client may choose today, with its price and the client's own share."""

    provider_id: str
    name: str
    unit_price_cents: int | None = Field(description="the provider's price per unit in force today (null: it has "
                                                     "published none for this funder and category)")
    price_list_id: str | None
    own_share_per_unit_cents: int | None = Field(description="max(0, price - the voucher's value per unit)")
    own_share_per_month_cents: int | None = Field(description="the own share per unit × the voucher's units per "
                                                              "month (null when its units are not monthly)")


class ProviderComparison(Page[ProviderOffer]):
    """A page of the providers approved for the voucher's funder and category and in force today, by own
    share (unknown last), then name."""

    voucher_id: str
    value_per_unit_cents: int | None
    on: date


class ExpiryRun(BaseModel):
    expired: int
    voucher_ids: list[str]


@router.get("/vouchers/{voucher_id}/providers", response_model=ProviderComparison, responses=error_responses(400))
async def compare_providers(
    voucher_id: str, sessions: SessionsDep, clock: ClockDep, page: PageDep,
    principal: Annotated[Principal, require(Role.CLIENT, Role.OPERATOR, *FUNDER_STAFF)],
) -> ProviderComparison:
    """The client's comparison: the providers approved for the voucher's funder and service category and
    not suspended or revoked today, each with its price in force today and the client's own share per
    unit and per month for this voucher; sorted by own share, then name."""
    voucher, offers, cursor = await lifecycle.compare_providers(sessions, principal, voucher_id, clock, page)
    return ProviderComparison(items=[ProviderOffer(**o.__dict__) for o in offers], next_cursor=cursor,
                              voucher_id=voucher.id, value_per_unit_cents=voucher.value_per_unit_cents,
                              on=clock.today())


@router.post("/jobs/expire", response_model=ExpiryRun, tags=["jobs"])
async def expire_vouchers(
    sessions: SessionsDep, clock: ClockDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> ExpiryRun:
    """The daily expiry job: every voucher in force whose validity has passed becomes `expired`
    (`VoucherExpired`), once; running it again changes nothing. Also `seteli-vouchers expire`."""
    ids = await lifecycle.expire_vouchers(sessions, clock, principal)
    return ExpiryRun(expired=len(ids), voucher_ids=ids)
