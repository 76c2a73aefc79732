"""Payments tables: projections of vouchers, approvals and funders, charges, settlements, the ledger."""
from __future__ import annotations

from datetime import date, datetime, timezone

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import BigIntPK, UTCDateTime

#: the source of the events payments writes into its outbox
SOURCE = "payments"


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
    #: the decision version whose terms the row holds (``VoucherIssued`` 1, ``VoucherAmended`` its own)
    decision_version: int | None = None
    #: ``VoucherRevoked``: when, and the first day the voucher is not in force (services before it may
    #: still be charged within the grace the charging rules give)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    revoked_from: date | None = None
    #: the funder's rule: the unused units of a month add to the next month's (migration 0007)
    carry_over: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    #: bumped by every charge: taking the row's write lock first serialises charges of one voucher
    version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # ---- the voucher's kind and its kind's terms, from ``VoucherIssued`` (migration 0006)
    kind: str = Field(default="service_voucher", max_length=24, sa_column_kwargs={"server_default": "service_voucher"})
    budget_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    categories: list | None = Field(default=None, sa_type=sa.JSON)
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None
    value_table_version: str | None = Field(default=None, max_length=40)
    #: the code the client gives its provider (``VoucherIssued.voucher_code``; migration 0008): a provider
    #: may charge by it instead of the voucher id
    voucher_code: str | None = Field(default=None, max_length=16, index=True)


class ApprovalView(SQLModel, table=True):
    """Projection of ``ProviderApproved``, ``ProviderSuspended``, ``ProviderReinstated`` and
    ``ProviderRevoked`` (folded by ``seteli_shared.approvals.ApprovalProjection``, in any order):
    whose charges are accepted for which funder and category, and for services until which date."""

    __tablename__ = "payments_approval"
    funder_id: str = Field(primary_key=True, max_length=40)
    provider_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=40)
    #: None while only life-cycle events of the approval have arrived
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    approval_id: str | None = Field(default=None, max_length=64)
    #: approved | suspended | revoked
    status: str = Field(default="approved", max_length=16, sa_column_kwargs={"server_default": "approved"})
    #: the first service date the approval does not cover (suspended or revoked from)
    not_in_force_from: date | None = None
    #: the registry's time of the latest status event applied (older ones change nothing)
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    status_reason: str | None = Field(default=None, max_length=64)


class PriceListView(SQLModel, table=True):
    """Projection of ``PriceListPublished``: every price list of a provider for a funder and category,
    the whole history (the one in force on a service date is ``charging.domain.price_in_force``)."""

    __tablename__ = "payments_price_list"
    __table_args__ = (sa.Index("ix_payments_price_list_lookup", "provider_id", "funder_id", "category",
                               "effective_from"),)
    price_list_id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(max_length=64)
    funder_id: str = Field(max_length=40)
    category: str = Field(max_length=40)
    unit: str = Field(max_length=16)
    unit_price_cents: int
    #: tariff name -> cents per unit (weekday, weekday_evening, saturday, sunday)
    tariffs: dict = Field(default_factory=dict, sa_type=sa.JSON)
    effective_from: date
    published_at: datetime = Field(sa_type=UTCDateTime())


class FunderView(SQLModel, table=True):
    """Projection of ``FunderRegistered``: the funder's contract terms settlement needs."""

    __tablename__ = "payments_funder"
    funder_id: str = Field(primary_key=True, max_length=40)
    operator_fee_rate: str = Field(max_length=16)  # a Decimal in plain digits, e.g. "0.05"
    #: the contract's charging deadline in days after the service date (``FunderRegistered``; migration
    #: 0010); None: payments' default (``domain.DEFAULT_CHARGE_DEADLINE_DAYS``)
    charge_deadline_days: int | None = None
    #: when the terms held were made (``FunderRegistered.registered_at``, ``FunderTermsChanged.changed_at``;
    #: migration 0011): older terms heard later change nothing
    terms_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: the funder's name as the registry registered it (migration 0015): the buyer on its invoices
    name: str | None = Field(default=None, max_length=200)


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
    #: the tariff the provider asked for (its price list's price for that time of day)
    tariff: str | None = Field(default=None, max_length=20)
    #: whether a price list of the provider's was in force on the service date (False: none was found,
    #: the price is the one sent or the voucher's value)
    price_registered: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    registered_price_cents: int | None = None
    price_list_id: str | None = Field(default=None, max_length=64)
    #: a client voucher's charge: the client's fixed fee for these units, owed to the funder (not the provider)
    client_fee_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    status: str = Field(max_length=16, index=True)
    accepted_at: datetime = Field(sa_type=UTCDateTime())
    settlement_id: str | None = Field(default=None, max_length=64, index=True)
    fee_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    net_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    #: when the provider cancelled the unsettled charge (status ``cancelled``; migration 0008)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: what corrections after settlement removed from the charge so far (running totals of its
    #: ``ChargeCorrection`` rows, kept in their transactions; migration 0010): the units the voucher has back
    corrected_units_x100: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    corrected_amount_cents: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})


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
    #: corrections of earlier settlements this one offsets (their negative lines; migration 0010): gross,
    #: fee and net are the charges' less the corrections'
    correction_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class ChargeCorrection(SQLModel, table=True):
    """A correction of a settled charge (migration 0010): what it removes (units, the funder's amount, the
    client's own share and fee), the part of the fee given back and the net the provider owes back. Never
    changed but for ``offset_settlement_id``, set once by the settlement run that offsets it."""

    __tablename__ = "payments_charge_correction"
    __table_args__ = (sa.Index("ix_payments_charge_correction_pending", "funder_id", "provider_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=64)
    charge_id: str = Field(foreign_key="payments_charge.id", max_length=64, index=True)
    voucher_id: str = Field(max_length=64)
    funder_id: str = Field(max_length=40)
    provider_id: str = Field(max_length=64)
    category: str = Field(max_length=40)
    service_date: date
    kind: str = Field(max_length=16)  # reversal | partial
    reason: str = Field(max_length=40)
    units_x100: int = Field(sa_type=sa.BigInteger)
    amount_cents: int = Field(sa_type=sa.BigInteger)
    own_share_cents: int = Field(sa_type=sa.BigInteger)
    client_fee_cents: int | None = Field(default=None, sa_type=sa.BigInteger)
    fee_cents: int = Field(sa_type=sa.BigInteger)
    net_cents: int = Field(sa_type=sa.BigInteger)
    #: the settlement that paid the charge, and the later one whose payout the correction reduced
    corrected_settlement_id: str = Field(max_length=64)
    offset_settlement_id: str | None = Field(default=None, max_length=64, index=True)
    #: or the recovery claim that asks the provider to pay it back (migration 0012): never both
    recovery_claim_id: str | None = Field(default=None, max_length=64, index=True)
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


class ProviderChoiceView(SQLModel, table=True):
    """Projection of ``VoucherProviderChosen``: every choice of provider of a voucher with the first
    service date it covers, so that a provider switched away from still charges the services it
    delivered before the switch (``lifecycle.provider_on``)."""

    __tablename__ = "payments_provider_choice"
    voucher_id: str = Field(primary_key=True, max_length=64)
    chosen_at: datetime = Field(primary_key=True, sa_type=UTCDateTime())
    provider_id: str = Field(primary_key=True, max_length=64)
    effective_from: date


class IdempotencyRecord(SQLModel, table=True):
    """An ``Idempotency-Key`` a caller sent (migration 0008), kept as its keyed hash only (migration 0013;
    ``intake.IdempotencyKey``) until ``expires_at``, when the purge removes it: the hash of the request it
    came with and, once answered, the answer to replay; ``status_code`` None while the first request is in
    flight. ``provider_id`` is the caller (a provider, or ``funder:<id>`` for a funder's corrections)."""

    __tablename__ = "payments_idempotency"
    provider_id: str = Field(primary_key=True, max_length=64)
    key_hash: str = Field(primary_key=True, max_length=64)
    operation: str = Field(max_length=40)
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(sa_type=UTCDateTime())
    expires_at: datetime = Field(sa_type=UTCDateTime(), index=True)


# ------------------------------------------------------------------ settlement runs, payouts, notices (migration 0009)
class ProviderView(SQLModel, table=True):
    """Projection of ``ProviderRegistered`` and ``ProviderUpdated``: whom a payout goes to (name, account)."""

    __tablename__ = "payments_provider"
    provider_id: str = Field(primary_key=True, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    iban: str | None = Field(default=None, max_length=34)
    bic: str | None = Field(default=None, max_length=11)
    updated_at: datetime = Field(sa_type=UTCDateTime())


class SettlementRun(SQLModel, table=True):
    """One settlement run (daily, or an operator's manual one) and its totals; its payment file is
    built from its payouts."""

    __tablename__ = "payments_settlement_run"
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)  # daily | manual
    run_date: date = Field(index=True)
    created_at: datetime = Field(sa_type=UTCDateTime())
    settlement_count: int
    gross_cents: int = Field(sa_type=sa.BigInteger)
    fee_cents: int = Field(sa_type=sa.BigInteger)
    net_cents: int = Field(sa_type=sa.BigInteger)
    #: provider-funder groups whose payout waits for a later run (under the minimum payout)
    held_back_count: int
    #: the day the bank executed the run's payment file, and when that was recorded (migration 0012)
    executed_on: date | None = None
    executed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class RecoveryClaim(SQLModel, table=True):
    """Corrections of a provider's settled charges with one funder that no settlement offset (no payout
    from that funder came to take them off): the provider is asked to pay their net back to the operator's
    account with the RF reference (migration 0012). Only ``repaid_cents`` changes, as repayments come in."""

    __tablename__ = "payments_recovery_claim"
    __table_args__ = (sa.Index("ix_payments_recovery_claim_funder", "funder_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=64)
    funder_id: str = Field(max_length=40)
    provider_id: str = Field(max_length=64, index=True)
    reason: str = Field(max_length=16)  # overdue (the daily run) | requested (staff)
    correction_count: int
    amount_cents: int = Field(sa_type=sa.BigInteger)
    fee_cents: int = Field(sa_type=sa.BigInteger)
    net_cents: int = Field(sa_type=sa.BigInteger)
    repaid_cents: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    reference: str = Field(max_length=25)
    due_on: date
    created_at: datetime = Field(sa_type=UTCDateTime())


class BankTransaction(SQLModel, table=True):
    """A movement on the operator's bank account as booked by the bank (migration 0012): a funder's
    payment in, a settlement's payout out (when the run's payment file was executed), a provider's
    repayment of a recovery claim in. ``bank_reference`` (the bank's archive id) is unique per kind, so a
    statement line recorded twice is recorded once."""

    __tablename__ = "payments_bank_transaction"
    __table_args__ = (sa.UniqueConstraint("kind", "bank_reference", name="uq_payments_bank_transaction_reference"),)
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=24)  # funder_payment | payout | recovery_repayment
    bank_reference: str = Field(max_length=64)
    amount_cents: int = Field(sa_type=sa.BigInteger)
    booked_on: date
    funder_id: str | None = Field(default=None, max_length=40, index=True)
    provider_id: str | None = Field(default=None, max_length=64)
    run_id: str | None = Field(default=None, max_length=64)
    claim_id: str | None = Field(default=None, max_length=64, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime())


class Payout(SQLModel, table=True):
    """The payout of one settlement in one run: why it was paid now, its RF creditor reference and the
    payee's account as known when it was made."""

    __tablename__ = "payments_payout"
    settlement_id: str = Field(primary_key=True, max_length=64)
    run_id: str = Field(max_length=64, index=True)
    reason: str = Field(max_length=24)  # settlement.PAY_* reasons
    reference: str = Field(max_length=25)
    payee_name: str | None = Field(default=None, max_length=200)
    iban: str | None = Field(default=None, max_length=34)
    bic: str | None = Field(default=None, max_length=11)


class Webhook(SQLModel, table=True):
    """A provider's webhook for settlement notices (providers without an AMQP consumer)."""

    __tablename__ = "payments_webhook"
    provider_id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2000)
    #: the HMAC-SHA256 key; shown to the provider once, when set
    secret: str = Field(max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime())
    updated_at: datetime = Field(sa_type=UTCDateTime())
    #: the secret before the latest rotation, still signing beside ``secret`` until ``previous_secret_until``
    #: (migration 0016; ``webhooks.rotate_secret``)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UTCDateTime())

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one in its grace."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None:
            until = until if until.tzinfo else until.replace(tzinfo=timezone.utc)
            if now < until:
                return [self.secret, self.previous_secret]
        return [self.secret]


class WebhookDelivery(SQLModel, table=True):
    """One notice to POST to a provider's webhook, with its state (pending, delivered, failed)."""

    __tablename__ = "payments_webhook_delivery"
    id: str = Field(primary_key=True, max_length=64)
    provider_id: str = Field(max_length=64, index=True)
    message_id: str = Field(max_length=64)
    notice_type: str = Field(max_length=80)
    url: str = Field(max_length=2000)
    body: str = Field(sa_type=sa.Text)
    status: str = Field(max_length=16, index=True)
    attempts: int
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(sa_type=UTCDateTime())
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class WebhookAttempt(SQLModel, table=True):
    """Append-only log of every POST of a delivery: when, the answer's status or the error."""

    __tablename__ = "payments_webhook_attempt"
    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    delivery_id: str = Field(max_length=64, index=True)
    attempt: int
    at: datetime = Field(sa_type=UTCDateTime())
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=300)
    duration_ms: int


# ------------------------------------------------------------------ funders' invoices (migration 0015)
from .invoicing.tables import FunderInvoice, InvoiceSeries  # noqa: E402, F401  (the invoicing room's tables)
