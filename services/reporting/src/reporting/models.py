"""Reporting read models, built only from events, and the archive of the events received."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class ReceivedEvent(SQLModel, table=True):
    """Every event reporting has received, kept so its read models can be rebuilt from scratch."""

    __tablename__ = "reporting_event"
    id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=200, index=True)
    time: datetime = Field(sa_type=UTCDateTime())
    envelope: str = Field(sa_type=sa.Text)


class FunderFigures(SQLModel, table=True):
    __tablename__ = "reporting_funder_figures"
    funder_id: str = Field(primary_key=True, max_length=40)
    providers_approved: int = 0
    approvals: int = 0
    vouchers_issued: int = 0
    clients: int = 0
    provider_choices: int = 0
    charges_accepted: int = 0
    units_charged_x100: int = 0
    charged_cents: int = Field(default=0, sa_type=sa.BigInteger)
    own_share_cents: int = Field(default=0, sa_type=sa.BigInteger)
    charges_settled: int = 0
    settlements: int = 0
    settled_gross_cents: int = Field(default=0, sa_type=sa.BigInteger)
    fee_cents: int = Field(default=0, sa_type=sa.BigInteger)
    net_cents: int = Field(default=0, sa_type=sa.BigInteger)


class FunderMember(SQLModel, table=True):
    """Distinct providers and pseudonymous clients seen per funder (for distinct counts)."""

    __tablename__ = "reporting_funder_member"
    funder_id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(primary_key=True, max_length=16)  # provider | client
    member_id: str = Field(primary_key=True, max_length=64)
