"""Registry tables: funders, providers and their approvals per funder and service category."""
from __future__ import annotations

from datetime import datetime

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
    created_at: datetime = Field(sa_type=UTCDateTime())


class Provider(SQLModel, table=True):
    __tablename__ = "registry_provider"
    id: str = Field(primary_key=True, max_length=64)
    business_id: str = Field(max_length=9, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    iban: str = Field(max_length=34)
    created_at: datetime = Field(sa_type=UTCDateTime())


class Approval(SQLModel, table=True):
    __tablename__ = "registry_approval"
    __table_args__ = (sa.UniqueConstraint("provider_id", "funder_id", "category", name="uq_registry_approval"),)
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(foreign_key="registry_provider.id", max_length=64)
    funder_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    approved_at: datetime = Field(sa_type=UTCDateTime())
