"""Vouchers HTTP API."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import select

from seteli_shared.catalogue import CATEGORIES, Period
import hmac
from typing import Annotated

from seteli_shared import audit
from seteli_shared.auth import (FUNDER_STAFF, PROVIDER_ROLES, Principal, Role, acting_for_funder, ensure_visible,
                                mint, require)
from seteli_shared.codes import new_code, normalise
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import FunderId, VoucherIssued, VoucherProviderChosen
from seteli_shared.logging import get_logger, new_id
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.outbox import add_event
from seteli_shared.service import SessionsDep

from . import domain
from .models import ApprovedProvider, Voucher

SOURCE = "vouchers"
router = APIRouter(tags=["vouchers"])
log = get_logger(__name__)


class VoucherCreate(BaseModel):
    funder_id: FunderId | None = Field(default=None, description="defaults to the caller's funder")
    decision_ref: str = Field(description="the funder's reference of the service decision")
    client_ref: str = Field(description="pseudonymous client reference issued by the funder; never a HETU")
    category: str
    units_per_period: Decimal = Field(gt=0, le=100000, decimal_places=2)
    period: Period = Period.MONTH
    value_per_unit_cents: int = Field(gt=0, le=10_000_000)
    valid_from: date
    valid_until: date


class VoucherPublic(BaseModel):
    id: str
    funder_id: str
    decision_ref: str
    client_ref: str
    category: str
    unit: str
    units_per_period: Decimal
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    status: str
    provider_id: str | None
    voucher_code: str | None
    issued_at: datetime

    @classmethod
    def of(cls, v: Voucher) -> "VoucherPublic":
        return cls(**v.model_dump(exclude={"units_per_period_x100"}),
                   units_per_period=from_hundredths(v.units_per_period_x100))


class ProviderChoice(BaseModel):
    provider_id: str


def _same_terms(v: Voucher, body: VoucherCreate) -> bool:
    return (v.client_ref, v.category, v.units_per_period_x100, v.period, v.value_per_unit_cents, v.valid_from,
            v.valid_until) == (body.client_ref, body.category, to_hundredths(body.units_per_period), body.period.value,
                               body.value_per_unit_cents, body.valid_from, body.valid_until)


@router.post("/vouchers", status_code=201, response_model=VoucherPublic)
async def issue_voucher(
    body: VoucherCreate, sessions: SessionsDep, response: Response,
    principal: Annotated[Principal, require(Role.FUNDER_DECISION_MAKER, Role.FUNDER_CASE_SYSTEM, scope="body")],
) -> VoucherPublic:
    """Issue a voucher on a service decision. The same decision sent again returns the same voucher."""
    body = body.model_copy(update={"funder_id": acting_for_funder(principal, body.funder_id)})
    domain.check_reference("client_ref", body.client_ref)
    domain.check_reference("decision_ref", body.decision_ref)
    domain.check_voucher_terms(body.category, body.valid_from, body.valid_until)

    async def issue():  # noqa: ANN202
        async with unit_of_work(sessions) as session:
            existing = (await session.exec(select(Voucher).where(
                Voucher.funder_id == body.funder_id, Voucher.decision_ref == body.decision_ref))).first()
            if existing:
                if not _same_terms(existing, body):
                    raise Conflict("decision_conflict", "this decision reference already has a voucher with other terms",
                                   voucher_id=existing.id)
                return VoucherPublic.of(existing), False
            voucher = Voucher(
                id=new_id(), funder_id=body.funder_id, decision_ref=body.decision_ref, client_ref=body.client_ref,
                category=body.category, unit=CATEGORIES[body.category].value,
                units_per_period_x100=to_hundredths(body.units_per_period), period=body.period.value,
                value_per_unit_cents=body.value_per_unit_cents, valid_from=body.valid_from,
                valid_until=body.valid_until, status=domain.ISSUED, issued_at=datetime.now(timezone.utc),
                voucher_code=new_code(),
            )
            session.add(voucher)
            await session.flush()
            await add_event(session, VoucherIssued(
                voucher_id=voucher.id, funder_id=voucher.funder_id, client_ref=voucher.client_ref,
                decision_ref=voucher.decision_ref, category=voucher.category, unit=voucher.unit,
                units_per_period=from_hundredths(voucher.units_per_period_x100), period=voucher.period,
                value_per_unit_cents=voucher.value_per_unit_cents, valid_from=voucher.valid_from,
                valid_until=voucher.valid_until, issued_at=voucher.issued_at), SOURCE)
            await audit.record(session, principal, "voucher.issue", "voucher", voucher.id, voucher.funder_id)
        return VoucherPublic.of(voucher), True

    public, new = await once_more_on_conflict(issue)
    if not new:
        response.status_code = 200
        return public
    log.info("voucher.issued", voucher_id=public.id, funder_id=public.funder_id, category=public.category)
    return public


@router.get("/vouchers/{voucher_id}", response_model=VoucherPublic)
async def get_voucher(
    voucher_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, Role.FUNDER_CASE_SYSTEM,
                                            *PROVIDER_ROLES, Role.CLIENT)],
) -> VoucherPublic:
    """A voucher: for its funder, its client, the provider chosen for it, and operator staff."""
    async with sessions() as session:
        voucher = await session.get(Voucher, voucher_id)
        if voucher is None:
            raise NotFound("voucher")
        ensure_visible(principal, "voucher", funder_id=voucher.funder_id, provider_id=voucher.provider_id,
                       voucher_id=voucher.id)
        return VoucherPublic.of(voucher)


@router.post("/vouchers/{voucher_id}/provider", response_model=VoucherPublic)
async def choose_provider(
    voucher_id: str, body: ProviderChoice, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.CLIENT, Role.FUNDER_DECISION_MAKER)],
) -> VoucherPublic:
    """The client (or the funder's decision maker for the client) chooses or switches to a provider
    approved by the voucher's funder for its category."""
    async with unit_of_work(sessions) as session:
        voucher = await session.get(Voucher, voucher_id, with_for_update=True)
        if voucher is None:
            raise NotFound("voucher")
        ensure_visible(principal, "voucher", funder_id=voucher.funder_id, voucher_id=voucher.id)
        domain.check_choosable(voucher.status, voucher.valid_until, date.today())
        if voucher.provider_id == body.provider_id:
            return VoucherPublic.of(voucher)
        approved = await session.get(ApprovedProvider, (voucher.funder_id, body.provider_id, voucher.category))
        if approved is None:
            raise DomainError("provider_not_approved",
                              "the provider is not approved by this funder for this service category")
        voucher.provider_id = body.provider_id
        voucher.status = domain.PROVIDER_CHOSEN
        session.add(voucher)
        await add_event(session, VoucherProviderChosen(
            voucher_id=voucher.id, funder_id=voucher.funder_id, provider_id=body.provider_id,
            category=voucher.category, chosen_at=datetime.now(timezone.utc)), SOURCE)
        await audit.record(session, principal, "voucher.choose_provider", "voucher", voucher.id, voucher.funder_id)
    log.info("voucher.provider_chosen", voucher_id=voucher.id, provider_id=body.provider_id)
    return VoucherPublic.of(voucher)


class ClientLogin(BaseModel):
    voucher_code: str = Field(max_length=32)
    decision_ref: str = Field(max_length=64)


class ClientToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    voucher_id: str


CLIENT_TOKEN_TTL = 3600


@router.post("/client-sessions", response_model=ClientToken, tags=["clients"])
async def client_login(body: ClientLogin, request: Request, sessions: SessionsDep) -> ClientToken:
    """The clients' light login: the voucher code and the decision reference give a token bound to
    that one voucher. Public; a wrong pair says only that it is wrong."""
    settings = request.app.state.settings
    refused = DomainError("invalid_voucher_credentials", "voucher code or decision reference is wrong",
                          status_code=401)
    code = normalise(body.voucher_code)
    if code is None:
        raise refused
    async with sessions() as session:
        voucher = (await session.exec(select(Voucher).where(Voucher.voucher_code == code))).first()
    if voucher is None or not hmac.compare_digest(voucher.decision_ref.encode(), body.decision_ref.encode()):
        raise refused
    if settings.is_development:
        key, alg, kid = settings.dev_signing_secret, "HS256", None
    elif settings.token_signing_key:
        key, alg, kid = settings.token_signing_key, "RS256", settings.token_signing_kid or None
    else:
        raise DomainError("client_login_unavailable", "no token signing key is configured", status_code=503)
    token = mint(f"client:{voucher.id}", [Role.CLIENT.value], key=key, algorithm=alg, kid=kid,
                 issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl=CLIENT_TOKEN_TTL,
                 voucher_id=voucher.id)
    return ClientToken(access_token=token, expires_in=CLIENT_TOKEN_TTL, voucher_id=voucher.id)
