"""Registry HTTP API: parse, authorise, call a use case (``usecases``), answer."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from seteli_shared.auth import (FUNDER_ROLES, FUNDER_STAFF, PROVIDER_ROLES, PROVIDER_STAFF, Principal, Role,
                                TenantScope, acting_for_funder, ensure_visible, require, tenant_scope)
from seteli_shared.clock import ClockDep
from seteli_shared.events import FunderId
from seteli_shared.schemas import Page, PageDep, RequestModel, Text
from seteli_shared.service import SessionsDep
from seteli_shared.web import error_responses

from . import domain, usecases
from .models import Approval, Funder, Provider

router = APIRouter()
#: who may read the register of funders: every staff member and system of the platform's parties
FUNDER_READERS = (Role.OPERATOR, *FUNDER_ROLES, *PROVIDER_ROLES)


# ------------------------------------------------------------------ funders
class FunderCreate(RequestModel):
    funder_id: FunderId = Field(description="the funder's code, e.g. the municipality code 091")
    name: Text
    kind: domain.FunderKind
    operator_fee_rate: domain.FeeRate = Field(default=domain.DEFAULT_FEE_RATE,
                                              description="the operator's fee on settled value, 0 <= rate < 1")
    settlement_days: domain.SettlementDays = Field(default=domain.DEFAULT_SETTLEMENT_DAYS,
                                                   description="charges are settled within this many days")
    contact_email: domain.Email | None = None

    def terms(self) -> domain.FunderTerms:
        return domain.FunderTerms(self.funder_id, self.name, self.kind.value,
                                  domain.fee_rate_text(self.operator_fee_rate), self.settlement_days,
                                  self.contact_email)


class FunderPublic(BaseModel):
    funder_id: str
    name: str
    kind: str
    operator_fee_rate: Decimal
    settlement_days: int
    contact_email: str | None
    created_at: datetime

    @classmethod
    def of(cls, f: Funder) -> "FunderPublic":
        return cls(**f.model_dump())


@router.post("/funders", status_code=201, response_model=FunderPublic, tags=["funders"], responses={
    200: {"model": FunderPublic, "description": "the same registration again: the funder as registered"},
    **error_responses(409)})
async def register_funder(
    body: FunderCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> FunderPublic:
    """Register a funder with its contract terms (operator staff). The same registration again answers
    200; the same funder with other terms is refused (409 ``funder_exists``)."""
    funder, new = await usecases.register_funder(sessions, clock, principal, body.terms())
    if not new:
        response.status_code = 200
    return FunderPublic.of(funder)


@router.get("/funders", response_model=Page[FunderPublic], tags=["funders"])
async def list_funders(
    sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(*FUNDER_READERS, scope="none")],
    kind: domain.FunderKind | None = None,
) -> Page[FunderPublic]:
    """The registered funders in the order of their codes."""
    funders, cursor = await usecases.funders_page(sessions, page, kind.value if kind else None)
    return Page(items=[FunderPublic.of(f) for f in funders], next_cursor=cursor)


@router.get("/funders/{funder_id}", response_model=FunderPublic, tags=["funders"])
async def get_funder(
    funder_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*FUNDER_READERS, scope="none")],
) -> FunderPublic:
    return FunderPublic.of(await usecases.get_funder(sessions, funder_id))


# ------------------------------------------------------------------ providers
class ProviderCreate(RequestModel):
    business_id: domain.BusinessId = Field(description="Finnish business ID (Y-tunnus), e.g. 2617416-4")
    name: Text
    iban: domain.Iban = Field(description="account for settlements")


class ApprovalCreate(RequestModel):
    funder_id: FunderId | None = Field(default=None, description="defaults to the caller's funder")
    category: domain.CategoryCode


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

    @classmethod
    def of(cls, p: Provider, approvals: list[Approval] = ()) -> "ProviderPublic":  # type: ignore[assignment]
        return cls(**p.model_dump(), approvals=[ApprovalPublic(**a.model_dump()) for a in approvals])


@router.post("/providers", status_code=201, response_model=ProviderPublic, tags=["providers"],
             responses=error_responses(409))
async def register_provider(
    body: ProviderCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="none")],
) -> ProviderPublic:
    """Register a provider (operator staff, or a funder's provider approver handling its application).
    A business ID already registered is refused (409 ``provider_exists``, naming that provider)."""
    provider = await usecases.register_provider(sessions, clock, principal, body.business_id, body.name, body.iban)
    return ProviderPublic.of(provider)


@router.get("/providers", response_model=Page[ProviderPublic], tags=["providers"])
async def list_providers(
    sessions: SessionsDep, page: PageDep,
    scope: Annotated[TenantScope, tenant_scope(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_STAFF)],
    funder_id: str | None = None,
    category: str | None = None,
    business_id: Annotated[domain.BusinessId | None, Query(description="exact match, in any form the "
                                                                       "Y-tunnus is written")] = None,
) -> Page[ProviderPublic]:
    """The register in name order: all providers for operator and funder staff; provider staff see their own."""
    providers, approvals, cursor = await usecases.providers_page(
        sessions, scope, page, funder_id=funder_id, category=category, business_id=business_id)
    return Page(items=[ProviderPublic.of(p, approvals[p.id]) for p in providers], next_cursor=cursor)


@router.get("/providers/{provider_id}", response_model=ProviderPublic, tags=["providers"])
async def get_provider(
    provider_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_STAFF, scope="register")],
) -> ProviderPublic:
    provider, approvals = await usecases.get_provider(sessions, provider_id)
    ensure_visible(principal, "provider", provider_id=provider.id, all_funders=True)
    return ProviderPublic.of(provider, approvals)


@router.post("/providers/{provider_id}/approvals", status_code=201, response_model=ApprovalPublic,
             tags=["providers"], responses={
                 200: {"model": ApprovalPublic, "description": "approved already: the approval as made"}})
async def approve_provider(
    provider_id: str, body: ApprovalCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="body")],
) -> ApprovalPublic:
    """A funder approves the provider for a service category. Approving again changes nothing (200).
    The funder must be registered (422 ``unknown_funder``)."""
    funder_id = acting_for_funder(principal, body.funder_id)
    approval, new = await usecases.approve_provider(sessions, clock, principal, provider_id, funder_id,
                                                    body.category)
    if not new:
        response.status_code = 200
    return ApprovalPublic(**approval.model_dump())
