"""Registry tables of prices: price lists per provider, funder and service category (every
publication kept, none overwritten), and the index the public comparison needs on approvals.

``registry.models`` imports this module at its end, so that the service's metadata
(``service_metadata``: the migrations' target and the test that migrations match models) holds
these tables too.
"""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime

from .models import Approval


class PriceList(SQLModel, table=True):
    """A provider's price for one funder and service category from a date. ``status``:
    ``pending_approval`` (the funder's rulebook wants price changes approved), ``published``
    (in force from ``effective_from`` until a later published list takes over) or ``rejected``.
    Tariffs (cents per unit) override the base price by time of day where set."""

    __tablename__ = "registry_price_list"
    __table_args__ = (
        # the comparison: the published lists of one funder and category, per provider by date
        sa.Index("ix_registry_price_list_in_force", "funder_id", "category", "status", "provider_id",
                 "effective_from"),
        # a provider's history, in the order the lists were made
        sa.Index("ix_registry_price_list_provider", "provider_id", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(foreign_key="registry_provider.id", max_length=64)
    funder_id: str = Field(foreign_key="registry_funder.funder_id", max_length=40)
    category: str = Field(max_length=40)
    unit: str = Field(max_length=16)
    unit_price_cents: int
    weekday_cents: int | None = None
    weekday_evening_cents: int | None = None
    saturday_cents: int | None = None
    sunday_cents: int | None = None
    effective_from: date
    status: str = Field(max_length=24)
    created_at: datetime = Field(sa_type=UTCDateTime())
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: a rejection's written grounds, shown to the provider
    grounds: str | None = Field(default=None, max_length=4000)


#: the comparison starts from a funder's approvals for one category (the unique constraint on
#: approvals leads with the provider, which serves the other direction)
APPROVAL_BY_FUNDER_INDEX = sa.Index("ix_registry_approval_funder_category", Approval.__table__.c.funder_id,
                                    Approval.__table__.c.category, Approval.__table__.c.provider_id)
