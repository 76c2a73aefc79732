"""Vouchers tables: vouchers, failed light logins (counted per key), and the projections of registry facts (funders,
approvals) this service relies on."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.approvals import state_of as approval_state  # noqa: F401  (a row as the rules see it)
from seteli_shared.messaging import UTCDateTime

from .lifecycle_models import PriceListEntry, ProviderName, Usage  # noqa: F401  (this service's tables)


class Voucher(SQLModel, table=True):
    __tablename__ = "vouchers_voucher"
    __table_args__ = (sa.UniqueConstraint("funder_id", "decision_ref", name="uq_vouchers_decision"),
                      sa.Index("ux_vouchers_voucher_code", "voucher_code", unique=True))
    id: str = Field(primary_key=True, max_length=64)
    funder_id: str = Field(max_length=40)
    decision_ref: str = Field(max_length=64)
    client_ref: str = Field(max_length=64, index=True)
    category: str = Field(max_length=40)
    unit: str = Field(max_length=16)
    units_per_period_x100: int
    period: str = Field(max_length=16)
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    status: str = Field(max_length=20)
    provider_id: str | None = Field(default=None, max_length=64)
    #: what the client gives to the provider (and, with the client login code, to log in)
    voucher_code: str | None = Field(default=None, max_length=16)  # unique: ux_vouchers_voucher_code
    issued_at: datetime = Field(sa_type=UTCDateTime())
    #: the client login code is never stored: only HMAC-SHA256(salt, code) with this voucher's salt
    client_login_salt: str | None = Field(default=None, max_length=32)
    client_login_hash: str | None = Field(default=None, max_length=64)
    client_login_issued_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: the version of the decision last applied (1 for the first; a bus decision's ``decision_version``)
    decision_version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    #: when a revoking decision was applied, and the first day the voucher is no longer in force
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    revoked_from: date | None = None
    # ---- the life cycle (lifecycle.py; migration 0008)
    #: the funder's rule: the unused units of a month add to the next month's
    carry_over: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    #: the decision's statistical attributes, passed on to reporting (optional)
    age_band: str | None = Field(default=None, max_length=8)
    municipality_of_residence: str | None = Field(default=None, max_length=3)
    #: when the expiry job found the validity passed, and when a whole-validity voucher was used up
    expired_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    exhausted_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    # ---- the voucher's kind and its kind's terms (value_engine.KINDS; migration 0007)
    #: service_voucher | income_related | client_voucher | personal_budget
    kind: str = Field(default="service_voucher", max_length=24,
                      sa_column_kwargs={"server_default": "service_voucher"})
    #: income_related: the formula table's version and the household size used (never the income)
    value_table_version: str | None = Field(default=None, max_length=40)
    household_size: int | None = None
    #: client_voucher: the funder's maximum per unit, and the client's fixed fee per unit to the funder
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None
    #: personal_budget: the money per period, and the categories it may be spent on
    budget_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    categories: list | None = Field(default=None, sa_type=sa.JSON)


class Funder(SQLModel, table=True):
    """Projection of ``FunderRegistered``: the funders vouchers may be issued for."""

    __tablename__ = "vouchers_funder"
    funder_id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    registered_at: datetime = Field(sa_type=UTCDateTime())


class LoginThrottle(SQLModel, table=True):
    """Failed light logins counted per key (``domain.ThrottleKeys``: one address, one voucher code from
    one address, one voucher code from every address), kept in the database so that every process of
    the service throttles alike. A key is only a keyed hash: neither the address nor the voucher code
    can be read back. A key whose last failure is older than the memory (``LOGIN_FAILURE_MEMORY_SECONDS``)
    counts from zero again, and such rows are deleted as new failures come in."""

    __tablename__ = "vouchers_login_throttle"
    __table_args__ = (sa.Index("ix_vouchers_login_throttle_last_failure_at", "last_failure_at"),)
    key: str = Field(primary_key=True, max_length=64)
    failures: int
    last_failure_at: datetime = Field(sa_type=UTCDateTime())


class ApprovedProvider(SQLModel, table=True):
    """Projection of ``ProviderApproved``, ``ProviderSuspended``, ``ProviderReinstated`` and
    ``ProviderRevoked``: who may be chosen for which funder and category, and from when not
    (``seteli_shared.approvals.ApprovalProjection`` folds the events, in any order)."""

    __tablename__ = "vouchers_approved_provider"
    funder_id: str = Field(primary_key=True, max_length=40)
    provider_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=40)
    #: None while only life-cycle events of the approval have arrived
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    approval_id: str | None = Field(default=None, max_length=64)
    #: approved | suspended | revoked
    status: str = Field(default="approved", max_length=16, sa_column_kwargs={"server_default": "approved"})
    #: the first day the approval is not in force (suspended or revoked from)
    not_in_force_from: date | None = None
    #: the registry's time of the latest status event applied (older ones change nothing)
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    status_reason: str | None = Field(default=None, max_length=64)


class ValueTable(SQLModel, table=True):
    """One version of a funder's formula table for income-related vouchers of a category (immutable:
    ``formulas.publish_table``). Percentages are kept as decimal strings (``"35"`` is 35 %)."""

    __tablename__ = "vouchers_value_table"
    funder_id: str = Field(primary_key=True, max_length=40)
    category: str = Field(primary_key=True, max_length=40)
    table_version: str = Field(primary_key=True, max_length=40)
    max_value_per_unit_cents: int
    min_value_per_unit_cents: int
    #: households of 1 to 6 persons
    income_limits_cents: list = Field(sa_type=sa.JSON)
    percentages: list = Field(sa_type=sa.JSON)
    extra_person_limit_cents: int
    extra_person_points: str = Field(max_length=16)
    published_at: datetime = Field(sa_type=UTCDateTime())
