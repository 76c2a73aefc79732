"""Registry use cases: each write is one transaction that changes state, records its audit entry
and writes its events to the outbox together. Time comes from the ``Clock`` passed in."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Sequence

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, TenantScope
from seteli_shared.clock import Clock
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import FunderRegistered, ProviderApproved, ProviderRegistered
from seteli_shared.logging import get_logger, new_id
from seteli_shared.outbox import add_event
from seteli_shared.schemas import PageParams, paginate

from . import domain
from .models import Approval, Funder, Provider

SOURCE = "registry"
Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)


def _terms(funder: Funder) -> domain.FunderTerms:
    return domain.FunderTerms(funder.funder_id, funder.name, funder.kind, funder.operator_fee_rate,
                              funder.settlement_days, funder.contact_email)


# ------------------------------------------------------------------ funders
async def register_funder(sessions: Sessions, clock: Clock, principal: Principal,
                          asked: domain.FunderTerms) -> tuple[Funder, bool]:
    """Returns the funder and whether it is new. The same registration again is a retry; the same
    funder with other terms is refused (``funder_exists``)."""

    async def register() -> tuple[Funder, bool]:
        async with unit_of_work(sessions) as session:
            existing = await session.get(Funder, asked.funder_id)
            if existing is not None:
                differing = domain.registration_conflicts(_terms(existing), asked)
                if differing:
                    raise Conflict("funder_exists", "this funder is already registered with other terms",
                                   funder_id=existing.funder_id, differing=differing)
                return existing, False
            funder = Funder(**asdict(asked), created_at=clock.now())
            session.add(funder)
            await session.flush()
            await add_event(session, FunderRegistered(
                funder_id=funder.funder_id, name=funder.name, kind=funder.kind,
                operator_fee_rate=funder.operator_fee_rate, registered_at=funder.created_at), SOURCE)
            await audit.record(session, principal, "funder.register", "funder", funder.funder_id, funder.funder_id)
        return funder, True

    funder, new = await once_more_on_conflict(register)
    if new:
        log.info("funder.registered", funder_id=funder.funder_id, kind=funder.kind)
    return funder, new


async def funders_page(sessions: Sessions, page: PageParams, kind: str | None = None) -> tuple[list[Funder], str | None]:
    async with sessions() as session:
        q = select(Funder)
        if kind:
            q = q.where(Funder.kind == kind)
        return await paginate(session, q, [Funder.funder_id], page)


async def get_funder(sessions: Sessions, funder_id: str) -> Funder:
    async with sessions() as session:
        funder = await session.get(Funder, funder_id)
    if funder is None:
        raise NotFound("funder")
    return funder


# ------------------------------------------------------------------ providers
async def register_provider(sessions: Sessions, clock: Clock, principal: Principal,
                            business_id: str, name: str, iban: str) -> Provider:
    """``business_id`` and ``iban`` come checked and in standard form (``domain.BusinessId``, ``domain.Iban``)."""
    provider = Provider(id=new_id(), business_id=business_id, name=name, iban=iban, created_at=clock.now())
    try:
        async with unit_of_work(sessions) as session:
            await _refuse_registered(session, business_id)
            session.add(provider)
            await session.flush()
            await add_event(session, ProviderRegistered(
                provider_id=provider.id, business_id=provider.business_id, name=provider.name,
                registered_at=provider.created_at), SOURCE)
            await audit.record(session, principal, "provider.register", "provider", provider.id, principal.funder_id)
    except IntegrityError:  # a concurrent twin registered it first: name that one
        async with sessions() as session:
            await _refuse_registered(session, business_id)
        raise
    log.info("provider.registered", provider_id=provider.id)
    return provider


async def _refuse_registered(session: AsyncSession, business_id: str) -> None:
    existing = (await session.execute(select(Provider.id).where(Provider.business_id == business_id))).scalar()
    if existing is not None:
        raise Conflict("provider_exists", "a provider with this business ID is already registered",
                       business_id=business_id, provider_id=existing)


async def providers_page(sessions: Sessions, scope: TenantScope, page: PageParams, *,
                         funder_id: str | None = None, category: str | None = None,
                         business_id: str | None = None) -> tuple[list[Provider], dict[str, list[Approval]], str | None]:
    """The register in name order, with each provider's approvals: funder staff see every provider,
    provider staff their own."""
    q = scope.restrict(select(Provider), provider=Provider.id, all_funders=True)
    if business_id:
        q = q.where(Provider.business_id == business_id)
    if funder_id or category:
        approved = select(Approval.id).where(Approval.provider_id == Provider.id)
        if funder_id:
            approved = approved.where(Approval.funder_id == funder_id)
        if category:
            approved = approved.where(Approval.category == category)
        q = q.where(exists(approved))
    async with sessions() as session:
        providers, cursor = await paginate(session, q, [Provider.name, Provider.id], page)
        approvals = await _approvals_of(session, [p.id for p in providers])
    return providers, approvals, cursor


async def get_provider(sessions: Sessions, provider_id: str) -> tuple[Provider, list[Approval]]:
    async with sessions() as session:
        provider = await session.get(Provider, provider_id)
        if provider is None:
            raise NotFound("provider")
        return provider, (await _approvals_of(session, [provider_id]))[provider_id]


async def _approvals_of(session: AsyncSession, provider_ids: Sequence[str]) -> dict[str, list[Approval]]:
    out: dict[str, list[Approval]] = defaultdict(list)
    if provider_ids:
        q = select(Approval).where(Approval.provider_id.in_(provider_ids)).order_by(
            Approval.approved_at, Approval.id)
        for a in (await session.execute(q)).scalars():
            out[a.provider_id].append(a)
    return out


# ------------------------------------------------------------------ approvals
async def approve_provider(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                           funder_id: str, category: str) -> tuple[Approval, bool]:
    """A funder approves a provider for a service category. Approving again changes nothing."""

    async def approve() -> tuple[Approval, bool]:
        async with unit_of_work(sessions) as session:
            if await session.get(Provider, provider_id) is None:
                raise NotFound("provider")
            if await session.get(Funder, funder_id) is None:
                raise DomainError("unknown_funder", "no funder with this ID is registered", funder_id=funder_id)
            existing = (await session.execute(select(Approval).where(
                Approval.provider_id == provider_id, Approval.funder_id == funder_id,
                Approval.category == category))).scalar_one_or_none()
            if existing:
                return existing, False
            approval = Approval(id=new_id(), provider_id=provider_id, funder_id=funder_id, category=category,
                                approved_at=clock.now())
            session.add(approval)
            await session.flush()
            await add_event(session, ProviderApproved(
                approval_id=approval.id, provider_id=provider_id, funder_id=funder_id, category=category,
                approved_at=approval.approved_at), SOURCE)
            await audit.record(session, principal, "provider.approve", "provider", provider_id, funder_id)
        return approval, True

    approval, new = await once_more_on_conflict(approve)
    if new:
        log.info("provider.approved", provider_id=provider_id, funder_id=funder_id, category=category)
    return approval, new
