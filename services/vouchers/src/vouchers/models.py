"""Vouchers tables: vouchers, and the projection of registry approvals this service relies on."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


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
    #: what the client gives to log in (with the decision reference) and to the provider
    voucher_code: str | None = Field(default=None, max_length=16)  # unique: ux_vouchers_voucher_code
    issued_at: datetime = Field(sa_type=UTCDateTime())


class ApprovedProvider(SQLModel, table=True):
    """Projection of ``ProviderApproved``: who may be chosen for which funder and category."""

    __tablename__ = "vouchers_approved_provider"
    funder_id: str = Field(primary_key=True, max_length=40)
    provider_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=40)
    approved_at: datetime = Field(sa_type=UTCDateTime())
