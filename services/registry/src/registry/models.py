"""Registry tables: funders and their rulebooks, providers (with their register data and service
units), applications, and approvals per funder and service category with their history."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class Funder(SQLModel, table=True):
    """A municipality, wellbeing services county or joint authority with its contract terms."""

    __tablename__ = "registry_funder"
    funder_id: str = Field(primary_key=True, max_length=40)  # its code, e.g. the municipality code "091"
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    operator_fee_rate: str = Field(max_length=16)  # a Decimal in plain digits, e.g. "0.05"
    settlement_days: int
    contact_email: str | None = Field(default=None, max_length=254)
    #: the contract's charging deadline: a service is charged within this many days of its date (migration 0006)
    charge_deadline_days: int = Field(default=90, sa_column_kwargs={"server_default": "90"})
    created_at: datetime = Field(sa_type=UTCDateTime())


class Rulebook(SQLModel, table=True):
    """One version of a funder's terms for a service category; immutable once published. A funder
    uses a category once it has published a rulebook for it."""

    __tablename__ = "registry_rulebook"
    __table_args__ = (sa.UniqueConstraint("funder_id", "category", "rulebook_version", name="uq_registry_rulebook"),)
    id: str = Field(primary_key=True, max_length=64)
    funder_id: str = Field(foreign_key="registry_funder.funder_id", max_length=40)
    category: str = Field(max_length=40)
    rulebook_version: str = Field(max_length=20)
    title: str = Field(max_length=200)
    document_url: str | None = Field(default=None, max_length=500)
    price_changes_need_approval: bool
    prepayment_check_max_age_days: int
    published_at: datetime = Field(sa_type=UTCDateTime())


class Provider(SQLModel, table=True):
    __tablename__ = "registry_provider"
    id: str = Field(primary_key=True, max_length=64)
    business_id: str = Field(max_length=9, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    iban: str = Field(max_length=34)
    created_at: datetime = Field(sa_type=UTCDateTime())
    # register data (business data, never client data), set with PATCH /providers/{id}
    contact_email: str | None = Field(default=None, max_length=254)
    contact_phone: str | None = Field(default=None, max_length=32)
    bic: str | None = Field(default=None, max_length=11)
    prepayment_registered: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    prepayment_checked_on: date | None = None
    liability_insurer: str | None = Field(default=None, max_length=200)
    liability_policy_number: str | None = Field(default=None, max_length=64)
    liability_valid_until: date | None = None
    patient_insurer: str | None = Field(default=None, max_length=200)
    patient_policy_number: str | None = Field(default=None, max_length=64)
    patient_valid_until: date | None = None
    supervisory_register_number: str | None = Field(default=None, max_length=64)
    #: ISO 639-1 codes of the languages it serves in, e.g. ["fi", "sv"]
    languages: list[str] | None = Field(default_factory=list, sa_type=sa.JSON)
    #: 3-digit codes of the municipalities it serves
    municipalities: list[str] | None = Field(default_factory=list, sa_type=sa.JSON)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class ServiceUnit(SQLModel, table=True):
    """A place where a provider delivers its services (a provider's units are replaced as a whole)."""

    __tablename__ = "registry_service_unit"
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(foreign_key="registry_provider.id", max_length=64, index=True)
    position: int
    name: str = Field(max_length=200)
    street_address: str = Field(max_length=200)
    postal_code: str = Field(max_length=5)
    municipality_code: str = Field(max_length=3)


class Application(SQLModel, table=True):
    """A provider's application to a funder for service categories: draft -> submitted ->
    approved | rejected | info_requested (-> submitted again)."""

    __tablename__ = "registry_application"
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(foreign_key="registry_provider.id", max_length=64, index=True)
    funder_id: str = Field(foreign_key="registry_funder.funder_id", max_length=40, index=True)
    status: str = Field(max_length=20)
    categories: list[str] = Field(sa_type=sa.JSON)
    #: category -> the rulebook version the provider accepts
    rulebook_versions: dict[str, str] = Field(sa_type=sa.JSON)
    created_at: datetime = Field(sa_type=UTCDateTime())
    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: the rejection's reason code
    reason: str | None = Field(default=None, max_length=64)
    #: the funder's last message (rejection, request for information)
    message: str | None = Field(default=None, max_length=2000)
    #: a rejection's written grounds, shown to the provider (free text: never logged or sent on the bus)
    grounds: str | None = Field(default=None, max_length=4000)


class Approval(SQLModel, table=True):
    """A funder's approval of a provider for one service category: active, suspended or revoked (final)."""

    __tablename__ = "registry_approval"
    __table_args__ = (sa.UniqueConstraint("provider_id", "funder_id", "category", name="uq_registry_approval"),)
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(foreign_key="registry_provider.id", max_length=64)
    funder_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    approved_at: datetime = Field(sa_type=UTCDateTime())
    status: str = Field(default="active", max_length=20, sa_column_kwargs={"server_default": "active"})
    application_id: str | None = Field(default=None, max_length=64)
    rulebook_version: str | None = Field(default=None, max_length=20)
    #: the reason and date of the current suspension or revocation
    status_reason: str | None = Field(default=None, max_length=64)
    status_effective_from: date | None = None
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: the written grounds of the current suspension or revocation (none for the daily check's, whose
    #: rule is its ground: ``status_reason``)
    status_grounds: str | None = Field(default=None, max_length=4000)


class ApprovalChange(SQLModel, table=True):
    """The history of an approval, append-only: approved, suspended, reinstated, revoked."""

    __tablename__ = "registry_approval_change"
    __table_args__ = (sa.UniqueConstraint("approval_id", "position", name="uq_registry_approval_change"),)
    id: str = Field(primary_key=True, max_length=64)
    approval_id: str = Field(foreign_key="registry_approval.id", max_length=64, index=True)
    position: int  # 0 for the approval itself, then 1, 2, ...
    action: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=2000)
    grounds: str | None = Field(default=None, max_length=4000)
    effective_from: date | None = None
    at: datetime = Field(sa_type=UTCDateTime())


from .price_models import APPROVAL_BY_FUNDER_INDEX, PriceList  # noqa: E402,F401  prices (price_models.py)
