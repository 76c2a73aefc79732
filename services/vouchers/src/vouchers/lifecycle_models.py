"""Tables of the voucher's life cycle: the usage projection (``ChargeAccepted`` from payments) and what
the client's comparison of providers needs from the registry (price lists, provider names)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class Usage(SQLModel, table=True):
    """Projection of ``ChargeAccepted``: one row per accepted charge of a voucher; the units and money
    used in a period are the sum over the period's service dates (``periods.period_bounds``), so an
    amendment of the voucher's period never leaves the projection keyed wrong."""

    __tablename__ = "vouchers_usage"
    __table_args__ = (sa.Index("ix_vouchers_usage_voucher_date", "voucher_id", "service_date"),)
    charge_id: str = Field(primary_key=True, max_length=64)
    voucher_id: str = Field(max_length=64)
    provider_id: str = Field(max_length=64)
    service_date: date
    units_x100: int
    #: what the voucher paid (the funder's part)
    amount_cents: int = Field(sa_type=sa.BigInteger)
    own_share_cents: int = Field(sa_type=sa.BigInteger)
    accepted_at: datetime = Field(sa_type=UTCDateTime())


class PriceListEntry(SQLModel, table=True):
    """Projection of ``PriceListPublished``: every price list, the whole history (the one in force on a
    day is the latest ``effective_from`` on or before it, then the latest published)."""

    __tablename__ = "vouchers_price_list"
    __table_args__ = (sa.Index("ix_vouchers_price_list_lookup", "funder_id", "category", "provider_id",
                               "effective_from"),)
    price_list_id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(max_length=64)
    funder_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    unit: str = Field(max_length=16)
    unit_price_cents: int
    effective_from: date
    published_at: datetime = Field(sa_type=UTCDateTime())


class ProviderName(SQLModel, table=True):
    """Projection of ``ProviderRegistered`` and ``ProviderUpdated``: the name the comparison shows."""

    __tablename__ = "vouchers_provider"
    provider_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    #: the registry's time of the name (an older event never overwrites a newer name)
    named_at: datetime = Field(sa_type=UTCDateTime())


class PeriodUsage(BaseModel):
    """The current period of a voucher as its client and funder see it (by the service's clock)."""

    period_start: date
    period_end: date
    units_per_period: Decimal = Field(description="the period's own units")
    units_carried_over: Decimal = Field(description="unused units of the previous month added to this one "
                                                    "(only when the funder's decision allows carry-over)")
    units_used: Decimal = Field(description="charged for services delivered in this period, by any provider")
    units_left: Decimal
    value_used_cents: int = Field(description="what the voucher has paid for this period's services")
    value_left_cents: int = Field(description="units left at the voucher's value per unit")
