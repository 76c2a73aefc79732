"""Registry HTTP API: parse, call the rules, store, emit events through the outbox."""
from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from typing import Annotated

from seteli_shared import audit
from seteli_shared.auth import (FUNDER_STAFF, PROVIDER_STAFF, Principal, Role, acting_for_funder, ensure_visible,
                                require)
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import FunderId, ProviderApproved, ProviderRegistered
from seteli_shared.logging import get_logger, new_id
from seteli_shared.outbox import add_event
from seteli_shared.service import SessionsDep

from . import domain
from .models import Approval, Provider

SOURCE = "registry"
router = APIRouter(tags=["providers"])
log = get_logger(__name__)


class ProviderCreate(BaseModel):
    business_id: str = Field(description="Finnish business ID (Y-tunnus), e.g. 2617416-4")
    name: str = Field(min_length=1, max_length=200)
    iban: str = Field(description="account for settlements")


class ApprovalCreate(BaseModel):
    funder_id: FunderId | None = Field(default=None, description="defaults to the caller's funder")
    category: str


class ApprovalPublic(BaseModel):
    id: str
    provider_id: str
    funder_id: str
    category: str
    approved_at: datetime


class ProviderPublic(BaseModel):
    id: str
    business_id: str
    name: str
    iban: str
    created_at: datetime
    approvals: list[ApprovalPublic] = []


async def _provider_public(session, provider: Provider) -> ProviderPublic:  # noqa: ANN001
    approvals = (await session.exec(select(Approval).where(Approval.provider_id == provider.id))).all()
    return ProviderPublic(**provider.model_dump(), approvals=[ApprovalPublic(**a.model_dump()) for a in approvals])


@router.post("/providers", status_code=201, response_model=ProviderPublic)
async def register_provider(
    body: ProviderCreate, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="none")],
) -> ProviderPublic:
    """Register a provider (operator staff, or a funder's provider approver handling its application)."""
    provider = Provider(
        id=new_id(), business_id=domain.valid_business_id(body.business_id), name=body.name.strip(),
        iban=domain.valid_iban(body.iban), created_at=datetime.now(timezone.utc),
    )
    try:
        async with unit_of_work(sessions) as session:
            session.add(provider)
            await session.flush()
            await add_event(session, ProviderRegistered(
                provider_id=provider.id, business_id=provider.business_id, name=provider.name,
                registered_at=provider.created_at), SOURCE)
            await audit.record(session, principal, "provider.register", "provider", provider.id, principal.funder_id)
    except IntegrityError as exc:
        raise Conflict("provider_exists", "a provider with this business ID is already registered",
                       business_id=provider.business_id) from exc
    log.info("provider.registered", provider_id=provider.id)
    return ProviderPublic(**provider.model_dump())


@router.get("/providers", response_model=list[ProviderPublic])
async def list_providers(
    sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_STAFF, scope="list")],
    funder_id: str | None = None, category: str | None = None,
):
    """The register: all providers for operator and funder staff; provider staff see their own."""
    async with sessions() as session:
        q = select(Provider).order_by(Provider.name, Provider.id)
        if principal.provider_id and not principal.is_operator:
            q = q.where(Provider.id == principal.provider_id)
        if funder_id or category:
            q = q.join(Approval, Approval.provider_id == Provider.id).distinct()
            if funder_id:
                q = q.where(Approval.funder_id == funder_id)
            if category:
                q = q.where(Approval.category == category)
        return [await _provider_public(session, p) for p in (await session.exec(q)).all()]


@router.get("/providers/{provider_id}", response_model=ProviderPublic)
async def get_provider(
    provider_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_STAFF, scope="register")],
) -> ProviderPublic:
    async with sessions() as session:
        provider = await session.get(Provider, provider_id)
        if provider is None:
            raise NotFound("provider")
        ensure_visible(principal, "provider", provider_id=provider.id, all_funders=True)
        return await _provider_public(session, provider)


@router.post("/providers/{provider_id}/approvals", status_code=201, response_model=ApprovalPublic)
async def approve_provider(
    provider_id: str, body: ApprovalCreate, sessions: SessionsDep, response: Response,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="body")],
) -> ApprovalPublic:
    """A funder approves the provider for a service category. Approving again changes nothing."""
    funder_id = acting_for_funder(principal, body.funder_id)
    category = domain.known_category(body.category)

    async def approve():  # noqa: ANN202
        async with unit_of_work(sessions) as session:
            if await session.get(Provider, provider_id) is None:
                raise NotFound("provider")
            existing = (await session.exec(select(Approval).where(
                Approval.provider_id == provider_id, Approval.funder_id == funder_id,
                Approval.category == category))).first()
            if existing:
                return ApprovalPublic(**existing.model_dump()), False
            approval = Approval(id=new_id(), provider_id=provider_id, funder_id=funder_id, category=category,
                                approved_at=datetime.now(timezone.utc))
            session.add(approval)
            await session.flush()
            await add_event(session, ProviderApproved(
                approval_id=approval.id, provider_id=provider_id, funder_id=approval.funder_id, category=category,
                approved_at=approval.approved_at), SOURCE)
            await audit.record(session, principal, "provider.approve", "provider", provider_id, funder_id)
        return ApprovalPublic(**approval.model_dump()), True

    public, new = await once_more_on_conflict(approve)
    if not new:
        response.status_code = 200
        return public
    log.info("provider.approved", provider_id=provider_id, funder_id=funder_id, category=category)
    return public
