"""Registry use cases: each write is one transaction that changes state, records its audit entry
and writes its events to the outbox together. Time comes from the ``Clock`` passed in."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Sequence

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, TenantScope, ensure_visible
from seteli_shared.clock import Clock
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import (FunderRegistered, FunderTermsChanged, ProviderApplied, ProviderApproved,
                                  ProviderRegistered, ProviderRejected, ProviderReinstated, ProviderRevoked,
                                  ProviderSuspended, ProviderUpdated, RulebookPublished)
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.outbox import add_event
from seteli_shared.schemas import PageParams, paginate

from . import domain
from .models import Application, Approval, ApprovalChange, Funder, Provider, Rulebook, ServiceUnit

SOURCE = "registry"
Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)


def _terms(funder: Funder) -> domain.FunderTerms:
    return domain.FunderTerms(funder.funder_id, funder.name, funder.kind, funder.operator_fee_rate,
                              funder.settlement_days, funder.contact_email, funder.charge_deadline_days)


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
                operator_fee_rate=funder.operator_fee_rate, registered_at=funder.created_at,
                charge_deadline_days=funder.charge_deadline_days), SOURCE)
            await audit.record(session, principal, "funder.register", "funder", funder.funder_id, funder.funder_id)
        return funder, True

    funder, new = await once_more_on_conflict(register)
    if new:
        log.info("funder.registered", funder_id=funder.funder_id, kind=funder.kind)
    return funder, new


async def change_funder_terms(sessions: Sessions, clock: Clock, principal: Principal, funder_id: str,
                              changes: dict[str, Any]) -> Funder:
    """Change a funder's terms (``changes``: field -> new value, checked); ``FunderTermsChanged`` when
    anything changed, nothing when the terms are the same."""
    async with unit_of_work(sessions) as session:
        funder = await session.get(Funder, funder_id, with_for_update=True)
        if funder is None:
            raise NotFound("funder")
        changed = {k: v for k, v in changes.items() if getattr(funder, k) != v}
        if not changed:
            return funder
        for k, v in changed.items():
            setattr(funder, k, v)
        session.add(funder)
        await session.flush()
        await add_event(session, FunderTermsChanged(
            funder_id=funder.funder_id, operator_fee_rate=funder.operator_fee_rate,
            settlement_days=funder.settlement_days, charge_deadline_days=funder.charge_deadline_days,
            changed_at=clock.now()), SOURCE)
        await audit.record(session, principal, "funder.change_terms", "funder", funder.funder_id, funder.funder_id)
    log.info("funder.terms_changed", funder_id=funder_id, changed=sorted(changed))
    return funder


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
                registered_at=provider.created_at, iban=provider.iban, bic=provider.bic), SOURCE)
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
                         business_id: str | None = None) -> tuple[list[ProviderRecord], str | None]:
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
        return await _records(session, providers), cursor


async def get_provider(sessions: Sessions, provider_id: str) -> ProviderRecord:
    async with sessions() as session:
        provider = await session.get(Provider, provider_id)
        if provider is None:
            raise NotFound("provider")
        return (await _records(session, [provider]))[0]


async def _approvals_of(session: AsyncSession, provider_ids: Sequence[str]) -> dict[str, list[Approval]]:
    out: dict[str, list[Approval]] = defaultdict(list)
    if provider_ids:
        q = select(Approval).where(Approval.provider_id.in_(provider_ids)).order_by(
            Approval.approved_at, Approval.id)
        for a in (await session.execute(q)).scalars():
            out[a.provider_id].append(a)
    return out


@dataclass
class ProviderRecord:
    """A provider with its service units, its approvals and each approval's history."""

    provider: Provider
    units: list[ServiceUnit] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    history: dict[str, list[ApprovalChange]] = field(default_factory=dict)


async def _records(session: AsyncSession, providers: Sequence[Provider]) -> list[ProviderRecord]:
    ids = [p.id for p in providers]
    approvals = await _approvals_of(session, ids)
    units: dict[str, list[ServiceUnit]] = defaultdict(list)
    history: dict[str, list[ApprovalChange]] = defaultdict(list)
    if ids:
        for u in (await session.execute(select(ServiceUnit).where(ServiceUnit.provider_id.in_(ids))
                                        .order_by(ServiceUnit.provider_id, ServiceUnit.position))).scalars():
            units[u.provider_id].append(u)
        approval_ids = [a.id for group in approvals.values() for a in group]
        if approval_ids:
            for c in (await session.execute(select(ApprovalChange).where(ApprovalChange.approval_id.in_(approval_ids))
                                            .order_by(ApprovalChange.approval_id, ApprovalChange.position))).scalars():
                history[c.approval_id].append(c)
    return [ProviderRecord(p, units[p.id], approvals[p.id], {a.id: history[a.id] for a in approvals[p.id]})
            for p in providers]


# ------------------------------------------------------------------ approvals
async def approve_provider(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                           funder_id: str, category: str) -> tuple[Approval, bool]:
    """A funder approves a provider for a service category. Approving again changes nothing."""

    async def approve() -> tuple[Approval, bool]:
        async with unit_of_work(sessions) as session:
            if await session.get(Provider, provider_id) is None:
                raise NotFound("provider")
            await _known_funder(session, funder_id)
            existing = await _approval_for(session, provider_id, funder_id, category)
            if existing:
                return existing, False
            rulebook = (await _latest_rulebooks(session, funder_id, [category]))[category]
            approval = await _new_approval(session, clock, provider_id, funder_id, category,
                                           rulebook.rulebook_version, None)
            await audit.record(session, principal, "provider.approve", "provider", provider_id, funder_id)
        return approval, True

    approval, new = await once_more_on_conflict(approve)
    if new:
        log.info("provider.approved", provider_id=provider_id, funder_id=funder_id, category=category)
    return approval, new


async def _known_funder(session: AsyncSession, funder_id: str) -> Funder:
    funder = await session.get(Funder, funder_id)
    if funder is None:
        raise DomainError("unknown_funder", "no funder with this ID is registered", funder_id=funder_id)
    return funder


async def _approval_for(session: AsyncSession, provider_id: str, funder_id: str, category: str) -> Approval | None:
    return (await session.execute(select(Approval).where(
        Approval.provider_id == provider_id, Approval.funder_id == funder_id,
        Approval.category == category))).scalar_one_or_none()


async def _new_approval(session: AsyncSession, clock: Clock, provider_id: str, funder_id: str, category: str,
                        rulebook_version: str | None, application_id: str | None) -> Approval:
    approval = Approval(id=new_id(), provider_id=provider_id, funder_id=funder_id, category=category,
                        approved_at=clock.now(), status=domain.ApprovalStatus.ACTIVE,
                        application_id=application_id, rulebook_version=rulebook_version)
    session.add(approval)
    await session.flush()
    await _record_change(session, approval, "approved", at=approval.approved_at)
    await add_event(session, ProviderApproved(
        approval_id=approval.id, provider_id=provider_id, funder_id=funder_id, category=category,
        approved_at=approval.approved_at, application_id=application_id, rulebook_version=rulebook_version), SOURCE)
    return approval


# ------------------------------------------------------------------ rulebooks
def _rulebook_terms(r: Rulebook) -> domain.RulebookTerms:
    return domain.RulebookTerms(r.funder_id, r.category, r.rulebook_version, r.title, r.document_url,
                                r.price_changes_need_approval, r.prepayment_check_max_age_days)


async def publish_rulebook(sessions: Sessions, clock: Clock, principal: Principal,
                           asked: domain.RulebookTerms) -> tuple[Rulebook, bool]:
    """A funder publishes a version of its rulebook for a category. Versions are immutable: the same
    again is a retry; other content under a published version is refused (409 ``rulebook_version_exists``)."""
    ensure_visible(principal, "funder", funder_id=asked.funder_id)

    async def publish() -> tuple[Rulebook, bool]:
        async with unit_of_work(sessions) as session:
            if await session.get(Funder, asked.funder_id) is None:
                raise NotFound("funder")
            existing = (await session.execute(select(Rulebook).where(
                Rulebook.funder_id == asked.funder_id, Rulebook.category == asked.category,
                Rulebook.rulebook_version == asked.rulebook_version))).scalar_one_or_none()
            if existing is not None:
                differing = domain.rulebook_conflicts(_rulebook_terms(existing), asked)
                if differing:
                    raise Conflict("rulebook_version_exists", "this version of the rulebook is published with "
                                   "other content; publish a new version", rulebook_version=asked.rulebook_version,
                                   differing=differing)
                return existing, False
            rulebook = Rulebook(id=new_id(), **asdict(asked), published_at=clock.now())
            session.add(rulebook)
            await session.flush()
            await add_event(session, RulebookPublished(
                funder_id=rulebook.funder_id, category=rulebook.category, rulebook_version=rulebook.rulebook_version,
                title=rulebook.title, price_changes_need_approval=rulebook.price_changes_need_approval,
                published_at=rulebook.published_at), SOURCE)
            await audit.record(session, principal, "rulebook.publish", "rulebook", rulebook.id, rulebook.funder_id)
        return rulebook, True

    rulebook, new = await once_more_on_conflict(publish)
    if new:
        log.info("rulebook.published", funder_id=rulebook.funder_id, category=rulebook.category,
                 rulebook_version=rulebook.rulebook_version)
    return rulebook, new


async def rulebooks_page(sessions: Sessions, funder_id: str, page: PageParams,
                         category: str | None = None) -> tuple[list[Rulebook], str | None]:
    async with sessions() as session:
        if await session.get(Funder, funder_id) is None:
            raise NotFound("funder")
        q = select(Rulebook).where(Rulebook.funder_id == funder_id)
        if category:
            q = q.where(Rulebook.category == category)
        return await paginate(session, q, [Rulebook.category, Rulebook.rulebook_version], page)


async def get_rulebook(sessions: Sessions, funder_id: str, category: str, version: str) -> Rulebook:
    async with sessions() as session:
        rulebook = (await session.execute(select(Rulebook).where(
            Rulebook.funder_id == funder_id, Rulebook.category == category,
            Rulebook.rulebook_version == version))).scalar_one_or_none()
    if rulebook is None:
        raise NotFound("rulebook")
    return rulebook


async def _latest_rulebooks(session: AsyncSession, funder_id: str, categories: Sequence[str]) -> dict[str, Rulebook]:
    """The funder's latest rulebook of each category; 422 ``category_not_used_by_funder`` naming the
    categories it has none for."""
    q = select(Rulebook).where(Rulebook.funder_id == funder_id, Rulebook.category.in_(categories)).order_by(
        Rulebook.published_at, Rulebook.id)
    latest = {r.category: r for r in (await session.execute(q)).scalars()}
    unused = [c for c in categories if c not in latest]
    if unused:
        raise DomainError("category_not_used_by_funder", "the funder has published no rulebook for these "
                          "categories", funder_id=funder_id, categories=unused)
    return latest


# ------------------------------------------------------------------ the provider's register data
async def update_provider(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                          changes: dict[str, Any], units: list[dict[str, str]] | None) -> ProviderRecord:
    """Set the given register data (``None`` clears a field); ``units`` replaces the service units."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    async with unit_of_work(sessions) as session:
        provider = await session.get(Provider, provider_id, with_for_update=True)
        if provider is None:
            raise NotFound("provider")
        if "bic" in changes and changes["bic"]:
            domain.check_bic_matches_iban(changes["bic"], provider.iban)
        changed = [k for k, v in changes.items() if getattr(provider, k) != v]
        for k in changed:
            setattr(provider, k, changes[k])
        if units is not None:
            old = (await session.execute(select(ServiceUnit).where(ServiceUnit.provider_id == provider_id)
                                         .order_by(ServiceUnit.position))).scalars().all()
            shape = ("name", "street_address", "postal_code", "municipality_code")
            if [{k: getattr(u, k) for k in shape} for u in old] != units:
                changed.append("service_units")
                await session.execute(delete(ServiceUnit).where(ServiceUnit.provider_id == provider_id))
                for i, u in enumerate(units):
                    session.add(ServiceUnit(id=new_id(), provider_id=provider_id, position=i, **u))
        if changed:
            provider.updated_at = clock.now()
            await session.flush()
            await add_event(session, ProviderUpdated(
                provider_id=provider_id, changed=changed, languages=provider.languages or [],
                municipalities=provider.municipalities or [], updated_at=provider.updated_at,
                iban=provider.iban, bic=provider.bic), SOURCE)
            await audit.record(session, principal, "provider.update", "provider", provider_id, principal.funder_id)
        record = (await _records(session, [provider]))[0]
    if changed:
        log.info("provider.updated", provider_id=provider_id, changed=changed)
    return record


async def _fitness(session: AsyncSession, provider: Provider) -> domain.Fitness:
    units = (await session.execute(select(func.count()).select_from(ServiceUnit).where(
        ServiceUnit.provider_id == provider.id))).scalar_one()
    return domain.Fitness(provider.prepayment_registered, provider.prepayment_checked_on,
                          provider.liability_valid_until, provider.patient_valid_until, units)


# ------------------------------------------------------------------ applications
async def create_application(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                             funder_id: str, categories: list[str],
                             versions: dict[str, str] | None = None) -> tuple[Application, bool]:
    """A draft application of a provider to a funder. Each category must be used by the funder; the
    accepted rulebook version defaults to the funder's latest. The same draft again is a retry."""
    ensure_visible(principal, "provider", provider_id=provider_id)
    categories = list(dict.fromkeys(categories))
    versions = versions or {}
    async with unit_of_work(sessions) as session:
        if await session.get(Provider, provider_id) is None:
            raise NotFound("provider")
        await _known_funder(session, funder_id)
        latest = await _latest_rulebooks(session, funder_id, categories)
        extra = sorted(set(versions) - set(categories))
        if extra:
            raise DomainError("rulebook_version_for_other_category", "rulebook versions may be named only for the "
                              "categories applied for", categories=extra)
        accepted = {}
        for c in categories:
            if c in versions and versions[c] != latest[c].rulebook_version:
                found = (await session.execute(select(Rulebook.id).where(
                    Rulebook.funder_id == funder_id, Rulebook.category == c,
                    Rulebook.rulebook_version == versions[c]))).scalar()
                if found is None:
                    raise DomainError("unknown_rulebook_version", "the funder has published no such version",
                                      category=c)
            accepted[c] = versions.get(c, latest[c].rulebook_version)
        drafts = (await session.execute(select(Application).where(
            Application.provider_id == provider_id, Application.funder_id == funder_id,
            Application.status == domain.ApplicationStatus.DRAFT))).scalars().all()
        for a in drafts:
            if a.categories == categories and a.rulebook_versions == accepted:
                return a, False
        application = Application(id=new_id(), provider_id=provider_id, funder_id=funder_id,
                                  status=domain.ApplicationStatus.DRAFT, categories=categories,
                                  rulebook_versions=accepted, created_at=clock.now())
        session.add(application)
        await session.flush()
        await audit.record(session, principal, "application.create", "application", application.id, funder_id)
    log.info("application.created", application_id=application.id, provider_id=provider_id, funder_id=funder_id)
    return application, True


async def _application_for_update(session: AsyncSession, principal: Principal, application_id: str) -> Application:
    application = await session.get(Application, application_id, with_for_update=True)
    if application is None:
        raise NotFound("application")
    ensure_visible(principal, "application", funder_id=application.funder_id, provider_id=application.provider_id)
    return application


async def submit_application(sessions: Sessions, clock: Clock, principal: Principal,
                             application_id: str) -> Application:
    """The provider submits its application: it must be in the prepayment register, insured and have
    a service unit (422 ``application_incomplete``, one reason per missing item)."""
    async with unit_of_work(sessions) as session:
        application = await _application_for_update(session, principal, application_id)
        application.status = domain.application_transition(application.status, "submit")
        provider = await session.get(Provider, application.provider_id)
        missing = domain.missing_for_application(await _fitness(session, provider), clock.today())
        if missing:
            raise DomainError("application_incomplete", "the provider's register data is not complete",
                              missing=missing)
        application.submitted_at = clock.now()
        await session.flush()
        await add_event(session, ProviderApplied(
            application_id=application.id, provider_id=application.provider_id, funder_id=application.funder_id,
            categories=application.categories, rulebook_versions=application.rulebook_versions,
            submitted_at=application.submitted_at), SOURCE)
        await audit.record(session, principal, "application.submit", "application", application.id,
                           application.funder_id)
    log.info("application.submitted", application_id=application_id)
    return application


async def approve_application(sessions: Sessions, clock: Clock, principal: Principal,
                              application_id: str) -> tuple[Application, list[Approval]]:
    """The funder approves a submitted application: an approval per category (one already in force is
    kept), each announced with the application and the accepted rulebook version."""
    async with unit_of_work(sessions) as session:
        application = await _application_for_update(session, principal, application_id)
        application.status = domain.application_transition(application.status, "approve")
        approvals = []
        for category in application.categories:
            existing = await _approval_for(session, application.provider_id, application.funder_id, category)
            if existing is not None and existing.status == domain.ApprovalStatus.REVOKED:
                raise Conflict("approval_revoked", "the provider's approval for this category was revoked",
                               category=category, approval_id=existing.id)
            approvals.append(existing or await _new_approval(
                session, clock, application.provider_id, application.funder_id, category,
                application.rulebook_versions.get(category), application.id))
        application.decided_at = clock.now()
        await session.flush()
        await audit.record(session, principal, "application.approve", "application", application.id,
                           application.funder_id)
    log.info("application.approved", application_id=application_id)
    return application, approvals


async def reject_application(sessions: Sessions, clock: Clock, principal: Principal, application_id: str,
                             reason: str, grounds: str | None) -> Application:
    """The funder rejects a submitted application, with a reason code and written grounds (422
    ``grounds_required`` without), which the provider reads with the application."""
    grounds = domain.require_grounds(grounds)
    async with unit_of_work(sessions) as session:
        application = await _application_for_update(session, principal, application_id)
        application.status = domain.application_transition(application.status, "reject")
        application.reason, application.grounds, application.decided_at = reason, grounds, clock.now()
        await session.flush()
        await add_event(session, ProviderRejected(
            application_id=application.id, provider_id=application.provider_id, funder_id=application.funder_id,
            categories=application.categories, reason=reason, rejected_at=application.decided_at), SOURCE)
        await audit.record(session, principal, "application.reject", "application", application.id,
                           application.funder_id)
    log.info("application.rejected", application_id=application_id, reason=reason)
    return application


async def request_information(sessions: Sessions, clock: Clock, principal: Principal, application_id: str,
                              message: str) -> Application:
    async with unit_of_work(sessions) as session:
        application = await _application_for_update(session, principal, application_id)
        application.status = domain.application_transition(application.status, "request_info")
        application.message = message
        await session.flush()
        await audit.record(session, principal, "application.request_info", "application", application.id,
                           application.funder_id)
    return application


async def get_application(sessions: Sessions, principal: Principal, application_id: str) -> Application:
    async with sessions() as session:
        application = await session.get(Application, application_id)
    if application is None:
        raise NotFound("application")
    ensure_visible(principal, "application", funder_id=application.funder_id, provider_id=application.provider_id)
    return application


async def applications_page(sessions: Sessions, scope: TenantScope, page: PageParams, *,
                            status: str | None = None, provider_id: str | None = None,
                            funder_id: str | None = None) -> tuple[list[Application], str | None]:
    """Applications in the order they were made: the provider's own, the funder's to it, all for operators."""
    q = scope.restrict(select(Application), funder=Application.funder_id, provider=Application.provider_id)
    if status:
        q = q.where(Application.status == status)
    if provider_id:
        q = q.where(Application.provider_id == provider_id)
    if funder_id:
        q = q.where(Application.funder_id == funder_id)
    async with sessions() as session:
        return await paginate(session, q, [Application.created_at, Application.id], page)


async def applicants(sessions: Sessions, provider_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """provider id -> (name, business ID): how a funder's staff know an applicant (a list of UUIDs tells
    them nothing)."""
    ids = sorted(set(provider_ids))
    if not ids:
        return {}
    async with sessions() as session:
        rows = (await session.execute(select(Provider.id, Provider.name, Provider.business_id)
                                      .where(Provider.id.in_(ids)))).all()
    return {pid: (name, business_id) for pid, name, business_id in rows}


# ------------------------------------------------------------------ suspension, reinstatement, revocation
async def _approval_for_update(session: AsyncSession, principal: Principal | None, approval_id: str) -> Approval:
    approval = await session.get(Approval, approval_id, with_for_update=True)
    if approval is None:
        raise NotFound("approval")
    if principal is not None:
        ensure_visible(principal, "approval", funder_id=approval.funder_id)
    return approval


async def _record_change(session: AsyncSession, approval: Approval, action: str, **fields: Any) -> None:
    """Append to the approval's history (its position is unique: a concurrent change fails, not interleaves)."""
    position = (await session.execute(select(func.count()).select_from(ApprovalChange).where(
        ApprovalChange.approval_id == approval.id))).scalar_one()
    session.add(ApprovalChange(id=new_id(), approval_id=approval.id, position=position, action=action, **fields))


async def _suspend(session: AsyncSession, clock: Clock, approval: Approval, reason: str,
                   effective_from: date, grounds: str | None = None) -> None:
    approval.status = domain.ApprovalStatus.SUSPENDED
    approval.status_reason, approval.status_effective_from, approval.status_changed_at = \
        reason, effective_from, clock.now()
    approval.status_grounds = grounds
    await _record_change(session, approval, "suspended", reason=reason, grounds=grounds,
                         effective_from=effective_from, at=approval.status_changed_at)
    await session.flush()
    await add_event(session, ProviderSuspended(
        approval_id=approval.id, provider_id=approval.provider_id, funder_id=approval.funder_id,
        category=approval.category, reason=reason, effective_from=effective_from,
        suspended_at=approval.status_changed_at), SOURCE)


async def change_approval(sessions: Sessions, clock: Clock, principal: Principal, approval_id: str, action: str,
                          reason: str | None = None, effective_from: date | None = None,
                          message: str | None = None, grounds: str | None = None) -> tuple[Approval, bool]:
    """Suspend, reinstate or revoke an approval. Suspending and revoking need written grounds (422
    ``grounds_required``), kept with the approval and its history for the provider to read. Asking for
    what already holds (the same suspension or revocation again, reinstating an approval in force) is a
    retry: nothing changes. Returns the approval and whether it changed."""
    if action in ("suspend", "revoke"):
        grounds = domain.require_grounds(grounds)
    if effective_from is not None:
        domain.not_in_past(effective_from, clock.today())
    async with unit_of_work(sessions) as session:
        approval = await _approval_for_update(session, principal, approval_id)
        same = approval.status_reason == reason and approval.status_effective_from == effective_from
        to = domain.approval_change(approval.status, action, same_as_current=same)
        if to is None:
            return approval, False
        now = clock.now()
        if action == "suspend":
            await _suspend(session, clock, approval, reason, effective_from, grounds)
        elif action == "reinstate":
            approval.status, approval.status_reason, approval.status_effective_from = to, None, None
            approval.status_changed_at, approval.status_grounds = now, None
            await _record_change(session, approval, "reinstated", message=message, at=now)
            await session.flush()
            await add_event(session, ProviderReinstated(
                approval_id=approval.id, provider_id=approval.provider_id, funder_id=approval.funder_id,
                category=approval.category, reinstated_at=now), SOURCE)
        else:
            approval.status, approval.status_reason, approval.status_effective_from = to, reason, effective_from
            approval.status_changed_at, approval.status_grounds = now, grounds
            await _record_change(session, approval, "revoked", reason=reason, grounds=grounds,
                                 effective_from=effective_from, at=now)
            await session.flush()
            await add_event(session, ProviderRevoked(
                approval_id=approval.id, provider_id=approval.provider_id, funder_id=approval.funder_id,
                category=approval.category, reason=reason, effective_from=effective_from, revoked_at=now), SOURCE)
        await audit.record(session, principal, f"approval.{action}", "approval", approval.id, approval.funder_id)
    log.info(f"approval.{action}", approval_id=approval_id, reason=reason)
    return approval, True


async def run_daily_check(sessions: Sessions, clock: Clock, principal: Principal) -> list[Approval]:
    """Suspend, from today, every active approval whose provider's liability or patient insurance has
    lapsed, that is not in the prepayment register, or whose register check is older than the
    funder's rulebook for the category allows. Running it again the same day changes nothing more."""
    today = clock.today()
    suspended = []
    async with unit_of_work(sessions) as session:
        active = (await session.execute(select(Approval).where(Approval.status == domain.ApprovalStatus.ACTIVE)
                                        .order_by(Approval.approved_at, Approval.id).with_for_update())).scalars().all()
        fitness: dict[str, domain.Fitness] = {}
        max_age: dict[tuple[str, str, str | None], int] = {}
        for approval in active:
            if approval.provider_id not in fitness:
                fitness[approval.provider_id] = await _fitness(session, await session.get(Provider, approval.provider_id))
            key = (approval.funder_id, approval.category, approval.rulebook_version)
            if key not in max_age:
                max_age[key] = await _prepayment_check_max_age(session, *key)
            reason = domain.suspension_reason(fitness[approval.provider_id], today, max_age[key])
            if reason:
                await _suspend(session, clock, approval, reason, today)
                await audit.record(session, principal, "approval.suspend", "approval", approval.id,
                                   approval.funder_id)
                suspended.append(approval)
    log.info("registry.daily_check", suspended=len(suspended), checked=len(active))
    return suspended


async def _prepayment_check_max_age(session: AsyncSession, funder_id: str, category: str,
                                    version: str | None) -> int:
    """The rulebook's allowance: the version the approval accepted, else the funder's latest."""
    q = select(Rulebook.prepayment_check_max_age_days).where(Rulebook.funder_id == funder_id,
                                                             Rulebook.category == category)
    if version:
        found = (await session.execute(q.where(Rulebook.rulebook_version == version))).scalar()
        if found is not None:
            return found
    found = (await session.execute(q.order_by(Rulebook.published_at.desc(), Rulebook.id.desc()).limit(1))).scalar()
    return found if found is not None else domain.DEFAULT_PREPAYMENT_CHECK_MAX_AGE_DAYS
