"""Payments tables: projections of vouchers, approvals and funders, charges, settlements, the ledger."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import BigIntPK, UTCDateTime


class VoucherView(SQLModel, table=True):
    """Projection of ``VoucherIssued`` and ``VoucherProviderChosen`` (which may arrive in either order)."""

    __tablename__ = "payments_voucher"
    voucher_id: str = Field(primary_key=True, max_length=64)
    funder_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    issued: bool = False
    units_per_period_x100: int | None = None
    period: str | None = Field(default=None, max_length=16)
    value_per_unit_cents: int | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    provider_id: str | None = Field(default=None, max_length=64)
    provider_chosen_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: bumped by every charge: taking the row's write lock first serialises charges of one voucher
    version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class ApprovalView(SQLModel, table=True):
    __tablename__ = "payments_approval"
    funder_id: str = Field(primary_key=True, max_length=40)
    provider_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=40)
    approved_at: datetime = Field(sa_type=UTCDateTime())


class FunderView(SQLModel, table=True):
    """Projection of ``FunderRegistered``: the funder's contract terms settlement needs."""

    __tablename__ = "payments_funder"
    funder_id: str = Field(primary_key=True, max_length=40)
    operator_fee_rate: str = Field(max_length=16)  # a Decimal in plain digits, e.g. "0.05"


class Charge(SQLModel, table=True):
    __tablename__ = "payments_charge"
    __table_args__ = (sa.UniqueConstraint("provider_id", "provider_reference", name="uq_payments_charge_ref"),)
    id: str = Field(primary_key=True, max_length=64)
    voucher_id: str = Field(max_length=64, index=True)
    funder_id: str = Field(max_length=40)
    provider_id: str = Field(max_length=64)
    category: str = Field(max_length=40)
    provider_reference: str = Field(max_length=100)
    service_date: date
    units_x100: int
    unit_price_cents: int
    amount_cents: int = Field(sa_type=sa.BigInteger)
    own_share_cents: int = Field(sa_type=sa.BigInteger)
    status: str = Field(max_length=16, index=True)
    accepted_at: datetime = Field(sa_type=UTCDateTime())
    settlement_id: str | None = Field(default=None, max_length=64, index=True)
    fee_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    net_cents: int | None = Field(default=None, sa_type=sa.BigInteger)


class Settlement(SQLModel, table=True):
    __tablename__ = "payments_settlement"
    id: str = Field(primary_key=True, max_length=64)
    funder_id: str = Field(max_length=40)
    provider_id: str = Field(max_length=64, index=True)
    charge_count: int
    gross_cents: int = Field(sa_type=sa.BigInteger)
    fee_cents: int = Field(sa_type=sa.BigInteger)
    net_cents: int = Field(sa_type=sa.BigInteger)
    fee_rate: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime())


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "payments_ledger_transaction"
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=32)
    reference: str = Field(max_length=64, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime())


class LedgerEntry(SQLModel, table=True):
    """Append-only. Debits are positive, credits negative; each transaction sums to zero."""

    __tablename__ = "payments_ledger_entry"
    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    transaction_id: str = Field(foreign_key="payments_ledger_transaction.id", max_length=64, index=True)
    account: str = Field(max_length=120, index=True)
    amount_cents: int = Field(sa_type=sa.BigInteger)
