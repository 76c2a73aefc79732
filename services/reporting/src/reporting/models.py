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


def _counter(big: bool = False):  # noqa: ANN202
    """A figure that starts at zero, in the database too (upserts name only what they change)."""
    return Field(default=0, sa_type=sa.BigInteger if big else sa.Integer, sa_column_kwargs={"server_default": "0"})


class FunderFigures(SQLModel, table=True):
    __tablename__ = "reporting_funder_figures"
    funder_id: str = Field(primary_key=True, max_length=40)
    providers_approved: int = _counter()
    approvals: int = _counter()
    vouchers_issued: int = _counter()
    clients: int = _counter()
    provider_choices: int = _counter()
    charges_accepted: int = _counter()
    units_charged_x100: int = _counter()
    charged_cents: int = _counter(big=True)
    own_share_cents: int = _counter(big=True)
    charges_settled: int = _counter()
    settlements: int = _counter()
    settled_gross_cents: int = _counter(big=True)
    fee_cents: int = _counter(big=True)
    net_cents: int = _counter(big=True)


class FunderMember(SQLModel, table=True):
    """Distinct providers and pseudonymous clients seen per funder (for distinct counts)."""

    __tablename__ = "reporting_funder_member"
    funder_id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(primary_key=True, max_length=16)  # provider | client
    member_id: str = Field(primary_key=True, max_length=64)
