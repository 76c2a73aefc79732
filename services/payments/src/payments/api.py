"""Payments HTTP API: charges, settlements, the ledger."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import select

from typing import Annotated

from seteli_shared import audit
from seteli_shared.auth import (PROVIDER_STAFF, Principal, Role, acting_for_provider, ensure_visible, require)
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import NotFound
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.service import SessionsDep

from . import domain, service
from .models import Charge, Settlement

router = APIRouter()
#: who may read charges and settlements (each only its own tenant's)
READERS = (Role.OPERATOR, Role.FUNDER_FINANCE, Role.FUNDER_REPORTING, *PROVIDER_STAFF, Role.PROVIDER_BILLING_SYSTEM)
log = get_logger(__name__)


class ChargeCreate(BaseModel):
    voucher_id: str
    provider_id: str | None = Field(default=None, description="defaults to the caller's provider")
    provider_reference: str = Field(min_length=1, max_length=100,
                                    description="the provider's own reference; a retry with it is safe")
    service_date: date
    units: Decimal = Field(gt=0, le=10000, decimal_places=2)
    unit_price_cents: int | None = Field(default=None, gt=0, le=10_000_000,
                                         description="the provider's price per unit; defaults to the voucher value")


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
    status: str
    accepted_at: datetime
    settlement_id: str | None
    fee_cents: int | None
    net_cents: int | None

    @classmethod
    def of(cls, c: Charge) -> "ChargePublic":
        return cls(**c.model_dump(exclude={"units_x100"}), units=from_hundredths(c.units_x100))


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


@router.post("/charges", status_code=201, response_model=ChargePublic, tags=["charges"])
async def charge_voucher(
    body: ChargeCreate, sessions: SessionsDep, response: Response,
    principal: Annotated[Principal, require(Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM, scope="body")],
) -> ChargePublic:
    """A provider charges a voucher for a delivered service. Refusals are 4xx with a reason."""
    provider_id = acting_for_provider(principal, body.provider_id)
    req = domain.ChargeRequest(provider_id, body.service_date, to_hundredths(body.units), body.unit_price_cents)
    async def accept():  # noqa: ANN202
        async with unit_of_work(sessions) as session:
            charge, new = await service.accept_charge(session, body.voucher_id, body.provider_reference, req)
            if new:
                await audit.record(session, principal, "charge.create", "charge", charge.id, charge.funder_id)
        return charge, new

    charge, new = await once_more_on_conflict(accept)
    if not new:
        response.status_code = 200
    else:
        log.info("charge.accepted", charge_id=charge.id, voucher_id=charge.voucher_id, amount_cents=charge.amount_cents)
    return ChargePublic.of(charge)


@router.get("/charges/{charge_id}", response_model=ChargePublic, tags=["charges"])
async def get_charge(
    charge_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> ChargePublic:
    async with sessions() as session:
        charge = await session.get(Charge, charge_id)
        if charge is None:
            raise NotFound("charge")
        ensure_visible(principal, "charge", funder_id=charge.funder_id, provider_id=charge.provider_id)
        return ChargePublic.of(charge)


@router.post("/settlements/run", response_model=list[SettlementPublic], tags=["settlements"])
async def run_settlement(
    request: Request, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> list[SettlementPublic]:
    """Settle all accepted charges now: one settlement per provider and funder, the fee deducted."""
    async with unit_of_work(sessions) as session:
        made = await service.run_settlement(session, request.app.state.settings.operator_fee_rate)
        for s in made:
            await audit.record(session, principal, "settlement.create", "settlement", s.id, s.funder_id)
    return [SettlementPublic(**s.model_dump()) for s in made]


@router.get("/settlements", response_model=list[SettlementPublic], tags=["settlements"])
async def list_settlements(
    sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS, scope="list")],
    provider_id: str | None = None, funder_id: str | None = None,
):
    """Settlements: a funder's staff see their funder's, a provider's staff their provider's."""
    if not principal.is_operator:  # the caller's own tenant, whatever the query says
        funder_id, provider_id = (principal.funder_id, provider_id) if principal.funder_id else (
            funder_id, principal.provider_id)
    async with sessions() as session:
        q = select(Settlement).order_by(Settlement.created_at, Settlement.id)
        if provider_id:
            q = q.where(Settlement.provider_id == provider_id)
        if funder_id:
            q = q.where(Settlement.funder_id == funder_id)
        return [SettlementPublic(**s.model_dump()) for s in (await session.exec(q)).all()]


@router.get("/settlements/{settlement_id}", response_model=SettlementDetail, tags=["settlements"])
async def get_settlement(
    settlement_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> SettlementDetail:
    async with sessions() as session:
        s = await session.get(Settlement, settlement_id)
        if s is None:
            raise NotFound("settlement")
        ensure_visible(principal, "settlement", funder_id=s.funder_id, provider_id=s.provider_id)
        charges = (await session.exec(select(Charge).where(Charge.settlement_id == s.id).order_by(Charge.id))).all()
        return SettlementDetail(**s.model_dump(), charges=[ChargePublic.of(c) for c in charges])


@router.get("/ledger/balances", tags=["ledger"])
async def ledger_balances(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict[str, int]:
    """Balance of every account in cents (debit positive)."""
    async with sessions() as session:
        return await service.balances(session)


@router.get("/ledger/check", tags=["ledger"])
async def ledger_check(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict:
    """The ledger's invariants: entries sum to zero, settled = charges minus fees."""
    async with sessions() as session:
        return await service.ledger_check(session)
