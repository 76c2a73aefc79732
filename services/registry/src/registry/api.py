"""Registry HTTP API: parse, authorise, call a use case (``usecases``), answer."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, FastAPI, Query, Response
from pydantic import AliasChoices, BaseModel, Field

from seteli_shared.auth import (FUNDER_ROLES, FUNDER_STAFF, PROVIDER_ROLES, PROVIDER_STAFF, Principal, Role,
                                TenantScope, acting_for_funder, ensure_visible, require, tenant_scope)
from seteli_shared.catalogue import CATALOGUE
from seteli_shared.clock import SYSTEM_CLOCK, ClockDep
from seteli_shared.events import FunderId
from seteli_shared.schedule import daily
from seteli_shared.schemas import BusinessDate, Page, PageDep, RequestModel, Text
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from . import domain, usecases
from .models import Application, Approval, ApprovalChange, Funder, Rulebook

#: who runs the scheduled daily check (its suspensions' audit entries name it)
DAILY_CHECK_JOB = Principal("job:registry.daily_check", frozenset({Role.OPERATOR}))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The daily check runs by itself at ``DAILY_CHECK_AT`` (UTC), once across the instances: a lapsed
    insurance suspends the approvals it concerns without anyone having to remember the check."""
    settings, tasks = app.state.settings, []
    if settings.schedules_daily_check:
        clock = getattr(app.state, "clock", None) or SYSTEM_CLOCK
        sessions = app.state.runtime.sessions
        tasks.append(asyncio.create_task(
            daily("registry.daily_check", settings.daily_check_at, clock,
                  lambda: usecases.run_daily_check(sessions, clock, DAILY_CHECK_JOB)), name="daily-check-scheduler"))
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


router = APIRouter(lifespan=lifespan)
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
    charge_deadline_days: domain.ChargeDeadlineDays = Field(
        default=domain.DEFAULT_CHARGE_DEADLINE_DAYS, description="a service must be charged within this many days "
        "of its date (the contract's charging deadline); a later charge is refused `charge_deadline_passed`")

    def terms(self) -> domain.FunderTerms:
        return domain.FunderTerms(self.funder_id, self.name, self.kind.value,
                                  domain.fee_rate_text(self.operator_fee_rate), self.settlement_days,
                                  self.contact_email, self.charge_deadline_days)


class FunderPublic(BaseModel):
    funder_id: str
    name: str
    kind: str
    operator_fee_rate: Decimal
    settlement_days: int
    contact_email: str | None
    charge_deadline_days: int
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


class FunderTermsUpdate(RequestModel):
    """The terms to change (those left out stay as they are)."""

    operator_fee_rate: domain.FeeRate | None = Field(default=None, description="the operator's fee on settled value")
    settlement_days: domain.SettlementDays | None = None
    charge_deadline_days: domain.ChargeDeadlineDays | None = Field(
        default=None, description="a service must be charged within this many days of its date")
    contact_email: domain.Email | None = None


@router.patch("/funders/{funder_id}", response_model=FunderPublic, tags=["funders"], responses=error_responses(404))
async def change_funder_terms(
    funder_id: str, body: FunderTermsUpdate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> FunderPublic:
    """Change a registered funder's contract terms (operator staff, on a new contract): announced as
    `FunderTermsChanged` (payments takes the fee rate for its next settlements and the charging deadline
    for the next charges). The same terms again change nothing and announce nothing."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "operator_fee_rate" in changes:
        changes["operator_fee_rate"] = domain.fee_rate_text(body.operator_fee_rate)
    return FunderPublic.of(await usecases.change_funder_terms(sessions, clock, principal, funder_id, changes))


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


GROUNDS = ("the funder's written grounds for the decision, shown to the provider (required: 422 "
           "``grounds_required`` without, or with fewer than 10 characters)")


class ApprovalChangePublic(BaseModel):
    action: str  # approved | suspended | reinstated | revoked
    reason: str | None = None
    message: str | None = None
    grounds: str | None = Field(default=None, description="the written grounds of a suspension or revocation")
    effective_from: date | None = None
    at: datetime

    @classmethod
    def of(cls, c: ApprovalChange) -> "ApprovalChangePublic":
        return cls(action=c.action, reason=c.reason, message=c.message, grounds=c.grounds,
                   effective_from=c.effective_from, at=c.at)


class ApprovalPublic(BaseModel):
    id: str
    provider_id: str
    funder_id: str
    category: str
    approved_at: datetime
    status: domain.ApprovalStatus
    application_id: str | None = None
    rulebook_version: str | None = None
    #: the reason and date of the current suspension or revocation
    status_reason: str | None = None
    status_effective_from: date | None = None
    status_grounds: str | None = Field(default=None, description="the written grounds of the current suspension "
                                       "or revocation (none for the daily check's: ``status_reason`` names its rule)")
    history: list[ApprovalChangePublic] = []

    @classmethod
    def of(cls, a: Approval, history: list[ApprovalChange] = ()) -> "ApprovalPublic":  # type: ignore[assignment]
        return cls(id=a.id, provider_id=a.provider_id, funder_id=a.funder_id, category=a.category,
                   approved_at=a.approved_at, status=a.status, application_id=a.application_id,
                   rulebook_version=a.rulebook_version, status_reason=a.status_reason,
                   status_effective_from=a.status_effective_from, status_grounds=a.status_grounds,
                   history=[ApprovalChangePublic.of(c) for c in history])


class Insurance(RequestModel):
    insurer: Text
    policy_number: domain.ShortText
    valid_until: BusinessDate


class InsurancePublic(BaseModel):
    insurer: str
    policy_number: str | None
    valid_until: date | None


class ServiceUnitIn(RequestModel):
    name: Text
    street_address: Text
    postal_code: domain.PostalCode = Field(description="5 digits")
    municipality_code: domain.MunicipalityCode = Field(description="3 digits, e.g. 091")


class ServiceUnitPublic(BaseModel):
    name: str
    street_address: str
    postal_code: str
    municipality_code: str


class ProviderPublic(BaseModel):
    id: str
    business_id: str
    name: str
    iban: str
    created_at: datetime
    contact_email: str | None = None
    contact_phone: str | None = None
    bic: str | None = None
    prepayment_registered: bool = False
    prepayment_checked_on: date | None = None
    liability_insurance: InsurancePublic | None = None
    patient_insurance: InsurancePublic | None = None
    supervisory_register_number: str | None = None
    languages: list[str] = []
    municipalities: list[str] = []
    service_units: list[ServiceUnitPublic] = []
    updated_at: datetime | None = None
    approvals: list[ApprovalPublic] = []

    @classmethod
    def of(cls, record: usecases.ProviderRecord) -> "ProviderPublic":
        p = record.provider

        def insurance(kind: str) -> InsurancePublic | None:
            insurer = getattr(p, f"{kind}_insurer")
            return InsurancePublic(insurer=insurer, policy_number=getattr(p, f"{kind}_policy_number"),
                                   valid_until=getattr(p, f"{kind}_valid_until")) if insurer else None

        return cls(
            id=p.id, business_id=p.business_id, name=p.name, iban=p.iban, created_at=p.created_at,
            contact_email=p.contact_email, contact_phone=p.contact_phone, bic=p.bic,
            prepayment_registered=p.prepayment_registered, prepayment_checked_on=p.prepayment_checked_on,
            liability_insurance=insurance("liability"), patient_insurance=insurance("patient"),
            supervisory_register_number=p.supervisory_register_number, languages=p.languages or [],
            municipalities=p.municipalities or [], updated_at=p.updated_at,
            service_units=[ServiceUnitPublic(name=u.name, street_address=u.street_address, postal_code=u.postal_code,
                                             municipality_code=u.municipality_code) for u in record.units],
            approvals=[ApprovalPublic.of(a, record.history.get(a.id, [])) for a in record.approvals])


class ProviderUpdate(RequestModel):
    """The fields to change; a field left out stays as it is, ``null`` clears it."""

    contact_email: domain.Email | None = None
    contact_phone: domain.Phone | None = None
    bic: domain.Bic | None = Field(default=None, description="checked against the IBAN's bank where that is known")
    prepayment_registered: bool = Field(default=False, description="in the prepayment register (ennakkoperintärekisteri)")
    prepayment_checked_on: BusinessDate | None = Field(default=None, description="when the register was last checked")
    liability_insurance: Insurance | None = None
    patient_insurance: Insurance | None = None
    supervisory_register_number: domain.ShortText | None = None
    languages: list[domain.Language] | None = Field(default=None, max_length=20, description="ISO 639-1 codes")
    municipalities: list[domain.MunicipalityCode] | None = Field(default=None, max_length=400)
    service_units: list[ServiceUnitIn] | None = Field(default=None, max_length=100,
                                                      description="replaces the provider's service units")

    def changes(self) -> tuple[dict, list[dict] | None]:
        given = self.model_fields_set
        out: dict = {}
        for name in ("contact_email", "contact_phone", "bic", "prepayment_checked_on", "supervisory_register_number"):
            if name in given:
                out[name] = getattr(self, name)
        if "prepayment_registered" in given:
            out["prepayment_registered"] = bool(self.prepayment_registered)
        for kind in ("liability", "patient"):
            if f"{kind}_insurance" in given:
                ins = getattr(self, f"{kind}_insurance")
                out[f"{kind}_insurer"] = ins.insurer if ins else None
                out[f"{kind}_policy_number"] = ins.policy_number if ins else None
                out[f"{kind}_valid_until"] = ins.valid_until if ins else None
        for name in ("languages", "municipalities"):
            if name in given:
                out[name] = list(dict.fromkeys(getattr(self, name) or []))
        units = None
        if "service_units" in given:
            units = [u.model_dump() for u in self.service_units or []]
        return out, units


@router.post("/providers", status_code=201, response_model=ProviderPublic, tags=["providers"],
             responses=error_responses(409))
async def register_provider(
    body: ProviderCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="none")],
) -> ProviderPublic:
    """Register a provider (operator staff, or a funder's provider approver handling its application).
    A business ID already registered is refused (409 ``provider_exists``, naming that provider)."""
    provider = await usecases.register_provider(sessions, clock, principal, body.business_id, body.name, body.iban)
    return ProviderPublic.of(usecases.ProviderRecord(provider))


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
    records, cursor = await usecases.providers_page(
        sessions, scope, page, funder_id=funder_id, category=category, business_id=business_id)
    return Page(items=[ProviderPublic.of(r) for r in records], next_cursor=cursor)


@router.get("/providers/{provider_id}", response_model=ProviderPublic, tags=["providers"])
async def get_provider(
    provider_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, *PROVIDER_STAFF, scope="register")],
) -> ProviderPublic:
    record = await usecases.get_provider(sessions, provider_id)
    ensure_visible(principal, "provider", provider_id=record.provider.id, all_funders=True)
    return ProviderPublic.of(record)


@router.patch("/providers/{provider_id}", response_model=ProviderPublic, tags=["providers"])
async def update_provider(
    provider_id: str, body: ProviderUpdate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.PROVIDER_MANAGER, scope="path")],
) -> ProviderPublic:
    """The provider's manager (or operator staff) updates its register data: contact, BIC (422
    ``bic_does_not_match_iban``), prepayment register, insurances, supervisory register number,
    languages, municipalities served and service units."""
    changes, units = body.changes()
    if changes.get("prepayment_checked_on") and changes["prepayment_checked_on"] > clock.today():
        raise domain.DomainError("prepayment_checked_on_in_future", "the register cannot have been checked "
                                 "in the future")
    return ProviderPublic.of(await usecases.update_provider(sessions, clock, principal, provider_id, changes, units))


@router.post("/providers/{provider_id}/approvals", status_code=201, response_model=ApprovalPublic,
             tags=["providers"], responses={
                 200: {"model": ApprovalPublic, "description": "approved already: the approval as made"}})
async def approve_provider(
    provider_id: str, body: ApprovalCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="body")],
) -> ApprovalPublic:
    """A funder approves the provider for a service category directly. Approving again changes nothing
    (200). The funder must be registered (422 ``unknown_funder``) and use the category: have published a
    rulebook for it (422 ``category_not_used_by_funder``); its latest version is recorded."""
    funder_id = acting_for_funder(principal, body.funder_id)
    approval, new = await usecases.approve_provider(sessions, clock, principal, provider_id, funder_id,
                                                    body.category)
    if not new:
        response.status_code = 200
    return ApprovalPublic.of(approval)


# ------------------------------------------------------------------ the service catalogue
class CategoryPublic(BaseModel):
    code: str
    unit: str
    name_fi: str
    name_sv: str
    name_en: str
    #: on the legislation's core list of services offered with vouchers
    core: bool


@router.get("/categories", response_model=list[CategoryPublic], tags=["catalogue"])
async def list_categories() -> list[CategoryPublic]:
    """The service catalogue (public): each category's code, unit and names in Finnish, Swedish and English."""
    return [CategoryPublic(code=c.code, unit=c.unit.value, name_fi=c.name_fi, name_sv=c.name_sv, name_en=c.name_en,
                           core=c.core) for c in CATALOGUE.values()]


# ------------------------------------------------------------------ rulebooks
class RulebookCreate(RequestModel):
    category: domain.CategoryCode
    rulebook_version: domain.RulebookVersion = Field(description='e.g. "2026.1"; a published version never changes')
    title: Text
    document_url: domain.Url | None = None
    price_changes_need_approval: bool = False
    prepayment_check_max_age_days: domain.PrepaymentCheckMaxAge = Field(
        default=domain.DEFAULT_PREPAYMENT_CHECK_MAX_AGE_DAYS,
        description="how old a provider's prepayment register check may be before its approval is suspended")

    def terms(self, funder_id: str) -> domain.RulebookTerms:
        return domain.RulebookTerms(funder_id, self.category, self.rulebook_version, self.title, self.document_url,
                                    self.price_changes_need_approval, self.prepayment_check_max_age_days)


class RulebookPublic(BaseModel):
    funder_id: str
    category: str
    rulebook_version: str
    title: str
    document_url: str | None
    price_changes_need_approval: bool
    prepayment_check_max_age_days: int
    published_at: datetime

    @classmethod
    def of(cls, r: Rulebook) -> "RulebookPublic":
        return cls(funder_id=r.funder_id, category=r.category, rulebook_version=r.rulebook_version, title=r.title,
                   document_url=r.document_url, price_changes_need_approval=r.price_changes_need_approval,
                   prepayment_check_max_age_days=r.prepayment_check_max_age_days, published_at=r.published_at)


@router.post("/funders/{funder_id}/rulebooks", status_code=201, response_model=RulebookPublic, tags=["funders"],
             responses=created_or_repeated(RulebookPublic, 409))
async def publish_rulebook(
    funder_id: str, body: RulebookCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER, scope="path")],
) -> RulebookPublic:
    """Publish a version of the funder's rulebook for a category (operator staff or the funder's provider
    approver); the funder uses the category from now on. The same version again answers 200; other
    content under it is refused (409 ``rulebook_version_exists``)."""
    rulebook, new = await usecases.publish_rulebook(sessions, clock, principal, body.terms(funder_id))
    if not new:
        response.status_code = 200
    return RulebookPublic.of(rulebook)


@router.get("/funders/{funder_id}/rulebooks", response_model=Page[RulebookPublic], tags=["funders"])
async def list_rulebooks(funder_id: str, sessions: SessionsDep, page: PageDep,
                         category: domain.CategoryCode | None = None) -> Page[RulebookPublic]:
    """The funder's rulebooks (public), by category and version."""
    rulebooks, cursor = await usecases.rulebooks_page(sessions, funder_id, page, category)
    return Page(items=[RulebookPublic.of(r) for r in rulebooks], next_cursor=cursor)


@router.get("/funders/{funder_id}/rulebooks/{category}/{rulebook_version}", response_model=RulebookPublic,
            tags=["funders"])
async def get_rulebook(funder_id: str, category: str, rulebook_version: str,
                       sessions: SessionsDep) -> RulebookPublic:
    """One version of a funder's rulebook for a category (public)."""
    return RulebookPublic.of(await usecases.get_rulebook(sessions, funder_id, category, rulebook_version))


# ------------------------------------------------------------------ applications
class ApplicationCreate(RequestModel):
    funder_id: FunderId
    categories: list[domain.CategoryCode] = Field(min_length=1, max_length=20)
    rulebook_versions: dict[domain.CategoryCode, domain.RulebookVersion] | None = Field(
        default=None, max_length=20, description="category -> the version accepted; the funder's latest by default")


class ApplicationRejection(RequestModel):
    reason: domain.ReasonCode = Field(description="a code, e.g. insufficient_staffing")
    grounds: domain.GroundsText | None = Field(default=None, description=GROUNDS,
                                               validation_alias=AliasChoices("grounds", "message"))


class InformationRequest(RequestModel):
    message: domain.Message


class ApplicationPublic(BaseModel):
    id: str
    provider_id: str
    funder_id: str
    status: domain.ApplicationStatus
    categories: list[str]
    rulebook_versions: dict[str, str]
    created_at: datetime
    submitted_at: datetime | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    message: str | None = None
    grounds: str | None = Field(default=None, description="a rejection's written grounds")
    provider_name: str | None = Field(default=None, description="the applicant as its funder's staff know it")
    business_id: str | None = Field(default=None, description="the applicant's business ID (Y-tunnus)")
    #: the approvals an approved application made (or found in force), in its answer to approve
    approvals: list[ApprovalPublic] = []

    @classmethod
    def of(cls, a: Application, approvals: list[Approval] = (),  # type: ignore[assignment]
           applicant: tuple[str, str] | None = None) -> "ApplicationPublic":
        name, business_id = applicant or (None, None)
        return cls(id=a.id, provider_id=a.provider_id, funder_id=a.funder_id, status=a.status,
                   categories=a.categories, rulebook_versions=a.rulebook_versions, created_at=a.created_at,
                   submitted_at=a.submitted_at, decided_at=a.decided_at, reason=a.reason, message=a.message,
                   grounds=a.grounds, provider_name=name, business_id=business_id,
                   approvals=[ApprovalPublic.of(x) for x in approvals])


async def _public(sessions, applications: list[Application],  # noqa: ANN001
                  approvals: list[Approval] = ()) -> list[ApplicationPublic]:  # type: ignore[assignment]
    """Applications as answered, each with its applicant's name and business ID."""
    known = await usecases.applicants(sessions, [a.provider_id for a in applications])
    return [ApplicationPublic.of(a, approvals, known.get(a.provider_id)) for a in applications]


async def _one(sessions, application: Application, approvals: list[Approval] = ()) -> ApplicationPublic:  # noqa: ANN001
    return (await _public(sessions, [application], approvals))[0]


APPLICANTS = (Role.OPERATOR, Role.PROVIDER_MANAGER)
DECIDERS = (Role.OPERATOR, Role.FUNDER_PROVIDER_APPROVER)


@router.post("/providers/{provider_id}/applications", status_code=201, response_model=ApplicationPublic,
             tags=["applications"], responses=created_or_repeated(ApplicationPublic))
async def create_application(
    provider_id: str, body: ApplicationCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(*APPLICANTS, scope="path")],
) -> ApplicationPublic:
    """The provider drafts an application to a funder for categories the funder uses (422
    ``unknown_funder``, ``category_not_used_by_funder``). The same draft again answers 200."""
    application, new = await usecases.create_application(sessions, clock, principal, provider_id, body.funder_id,
                                                         body.categories, body.rulebook_versions)
    if not new:
        response.status_code = 200
    return await _one(sessions, application)


@router.get("/applications", response_model=Page[ApplicationPublic], tags=["applications"])
async def list_applications(
    sessions: SessionsDep, page: PageDep,
    scope: Annotated[TenantScope, tenant_scope(Role.OPERATOR, *FUNDER_STAFF, Role.PROVIDER_MANAGER)],
    status: domain.ApplicationStatus | None = None,
    provider_id: str | None = None,
    funder_id: str | None = None,
) -> Page[ApplicationPublic]:
    """Applications in the order they were made: a provider's own, those to a funder, all for operator staff."""
    applications, cursor = await usecases.applications_page(
        sessions, scope, page, status=status.value if status else None, provider_id=provider_id, funder_id=funder_id)
    return Page(items=await _public(sessions, applications), next_cursor=cursor)


@router.get("/applications/{application_id}", response_model=ApplicationPublic, tags=["applications"])
async def get_application(
    application_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(Role.OPERATOR, *FUNDER_STAFF, Role.PROVIDER_MANAGER, scope="path")],
) -> ApplicationPublic:
    return await _one(sessions, await usecases.get_application(sessions, principal, application_id))


@router.post("/applications/{application_id}/submit", response_model=ApplicationPublic, tags=["applications"],
             responses=error_responses(409))
async def submit_application(
    application_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*APPLICANTS, scope="path")],
) -> ApplicationPublic:
    """Submit a draft (or an application the funder asked more of). The provider must be in the prepayment
    register, insured (liability and patient insurance valid) and have a service unit: otherwise 422
    ``application_incomplete`` with one reason per missing item. A wrong state is 409 ``invalid_transition``."""
    return await _one(sessions, await usecases.submit_application(sessions, clock, principal, application_id))


@router.post("/applications/{application_id}/approve", response_model=ApplicationPublic, tags=["applications"],
             responses=error_responses(409))
async def approve_application(
    application_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
) -> ApplicationPublic:
    """The funder approves a submitted application: one approval per category, each announced."""
    application, approvals = await usecases.approve_application(sessions, clock, principal, application_id)
    return await _one(sessions, application, approvals)


@router.post("/applications/{application_id}/reject", response_model=ApplicationPublic, tags=["applications"],
             responses=error_responses(409, 422))
async def reject_application(
    application_id: str, body: ApplicationRejection, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
) -> ApplicationPublic:
    """The funder rejects a submitted application with a reason code and written grounds (422
    ``grounds_required`` without), which the provider reads with its application."""
    return await _one(sessions, await usecases.reject_application(sessions, clock, principal, application_id,
                                                                  body.reason, body.grounds))


@router.post("/applications/{application_id}/request-info", response_model=ApplicationPublic,
             tags=["applications"], responses=error_responses(409))
async def request_information(
    application_id: str, body: InformationRequest, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
) -> ApplicationPublic:
    """The funder asks the provider for more; the provider submits again."""
    return await _one(sessions, await usecases.request_information(sessions, clock, principal, application_id,
                                                                   body.message))


# ------------------------------------------------------------------ suspension, reinstatement, revocation
class ApprovalSuspension(RequestModel):
    reason: domain.ReasonCode = Field(description="a code, e.g. funder_decision")
    effective_from: BusinessDate = Field(description="today or later")
    grounds: domain.GroundsText | None = Field(default=None, description=GROUNDS,
                                               validation_alias=AliasChoices("grounds", "message"))


class ApprovalReinstatement(RequestModel):
    message: domain.Message | None = None


@router.post("/approvals/{approval_id}/suspend", response_model=ApprovalPublic, tags=["approvals"],
             responses=error_responses(409))
async def suspend_approval(
    approval_id: str, body: ApprovalSuspension, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
) -> ApprovalPublic:
    """Suspend an active approval from a date (not in the past: 422 ``effective_from_in_past``), with written
    grounds the provider reads (422 ``grounds_required`` without). The same
    suspension again changes nothing; a revoked approval cannot be suspended (409 ``invalid_transition``)."""
    approval, _ = await usecases.change_approval(sessions, clock, principal, approval_id, "suspend", body.reason,
                                                 body.effective_from, grounds=body.grounds)
    return ApprovalPublic.of(approval)


@router.post("/approvals/{approval_id}/reinstate", response_model=ApprovalPublic, tags=["approvals"],
             responses=error_responses(409))
async def reinstate_approval(
    approval_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
    body: ApprovalReinstatement | None = None,
) -> ApprovalPublic:
    """Put a suspended approval in force again (one in force stays so); a revoked one never (409)."""
    approval, _ = await usecases.change_approval(sessions, clock, principal, approval_id, "reinstate",
                                                 message=body.message if body else None)
    return ApprovalPublic.of(approval)


@router.post("/approvals/{approval_id}/revoke", response_model=ApprovalPublic, tags=["approvals"],
             responses=error_responses(409))
async def revoke_approval(
    approval_id: str, body: ApprovalSuspension, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*DECIDERS, scope="path")],
) -> ApprovalPublic:
    """End an approval for good from a date, with written grounds the provider reads (422
    ``grounds_required`` without). The same revocation again changes nothing; otherwise a
    revoked approval is final (409 ``invalid_transition``)."""
    approval, _ = await usecases.change_approval(sessions, clock, principal, approval_id, "revoke", body.reason,
                                                 body.effective_from, grounds=body.grounds)
    return ApprovalPublic.of(approval)


class DailyCheck(BaseModel):
    checked_on: date
    suspended: list[ApprovalPublic]


@router.post("/checks/daily", response_model=DailyCheck, tags=["approvals"])
async def run_daily_check(
    sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> DailyCheck:
    """Suspend every active approval whose provider's insurance has lapsed (``insurance_lapsed``), that is not
    in the prepayment register (``not_in_prepayment_register``) or whose register check is older than the
    funder's rulebook allows (``prepayment_register_check_outdated``). Again on the same day: nothing more. The
    service also runs it by itself every day at `DAILY_CHECK_AT` (UTC)."""
    suspended = await usecases.run_daily_check(sessions, clock, principal)
    return DailyCheck(checked_on=clock.today(), suspended=[ApprovalPublic.of(a) for a in suspended])
