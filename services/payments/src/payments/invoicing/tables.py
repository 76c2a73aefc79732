"""The invoicing room's tables: the operator's invoice number series and the invoices as issued (migration
0015). Part of payments' models (``payments.models`` imports them, so the migrations' metadata has them)."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class InvoiceSeries(SQLModel, table=True):
    """The operator's invoice number series: the next number to give. Taken (``UPDATE ... RETURNING``, the
    row locked until commit) in the transaction that writes the invoice, so a number is used exactly when
    its invoice exists: no gaps, no number twice."""

    __tablename__ = "payments_invoice_series"
    series: str = Field(primary_key=True, max_length=40)  # the operator's business ID
    next_number: int = Field(sa_type=sa.BigInteger)


class FunderInvoice(SQLModel, table=True):
    """A funder's invoice for a month's settlements, or a credit note crediting one (``kind``), as issued:
    never changed but for ``credited_by`` (set once, by its credit note). Amounts are the month's as they
    stood when issued (``lines``); a credit note's are the credited invoice's, negative."""

    __tablename__ = "payments_funder_invoice"
    __table_args__ = (sa.UniqueConstraint("series", "number", name="uq_payments_funder_invoice_number"),
                      sa.Index("ix_payments_funder_invoice_month", "funder_id", "month"))
    id: str = Field(primary_key=True, max_length=64)
    series: str = Field(max_length=40)
    number: int = Field(sa_type=sa.BigInteger)
    kind: str = Field(max_length=16)  # invoice | credit_note
    funder_id: str = Field(max_length=40)
    buyer_name: str = Field(max_length=200)
    month: str = Field(max_length=7)
    invoice_date: date
    due_date: date
    payment_terms_days: int
    #: the Finnish reference (viitenumero, 7-3-1 check digit) and the same as an RF creditor reference
    reference: str = Field(max_length=20)
    rf_reference: str = Field(max_length=25)
    total_cents: int = Field(sa_type=sa.BigInteger)
    #: [{category, charge_count, gross_cents, fee_cents, net_cents}] as issued
    lines: list = Field(default_factory=list, sa_type=sa.JSON)
    #: a credit note: the invoice it credits, and why (a code)
    credits_invoice_id: str | None = Field(default=None, max_length=64)
    credit_reason: str | None = Field(default=None, max_length=40)
    #: an invoice: the credit note that credited it (then a new invoice may be issued for its month)
    credited_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime())
