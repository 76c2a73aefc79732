"""Reporting read models, built only from events, and the archive of the events received."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class ReceivedEvent(SQLModel, table=True):
    """Every event reporting has received, kept so its read models can be rebuilt from scratch."""

    __tablename__ = "reporting_event"
    __table_args__ = (sa.Index("ix_reporting_event_time_id", "time", "id"),)  # the rebuild's order
    id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=200, index=True)
    time: datetime = Field(sa_type=UTCDateTime())
    envelope: str = Field(sa_type=sa.Text)
    #: arrival order on PostgreSQL (``reporting_event_seq``, taken by ``handlers.archive_many``): what a
    #: rebuild folds after its snapshot; none for events archived before migration 0010, and on SQLite
    seq: int | None = Field(default=None, sa_type=sa.BigInteger, index=True)


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


# ---------------------------------------------------------------------------------------------------
# The monitoring read models (issue 10). Each is keyed so that folding the same events in any order
# gives the same rows: facts keyed by their own ids, sums keyed by (funder, month, category, ...).
# ``period`` is a month ``YYYY-MM``: of the service date for charges, of the event for the rest.

def _col(type_, *, pk: bool = False, nullable: bool = False, default=None, index: bool = False):  # noqa: ANN001, ANN202
    kw = {"server_default": str(default)} if default is not None else {}
    return Field(default=default, sa_column=sa.Column(type_, primary_key=pk, nullable=nullable and not pk,
                                                      index=index, **kw))


def _sum():  # noqa: ANN202
    return _col(sa.BigInteger, default=0)


class VoucherFact(SQLModel, table=True):
    """A voucher as reporting knows it: whose (pseudonymous), which category, terms, ends."""

    __tablename__ = "reporting_voucher"
    voucher_id: str = _col(sa.String(64), pk=True)
    funder_id: str = _col(sa.String(40), index=True)
    category: str = _col(sa.String(40))
    client_ref: str | None = _col(sa.String(200), nullable=True)
    age_band: str | None = _col(sa.String(16), nullable=True)
    municipality: str | None = _col(sa.String(8), nullable=True)
    unit: str | None = _col(sa.String(20), nullable=True)
    period_kind: str | None = _col(sa.String(20), nullable=True)
    units_per_period_x100: int = _col(sa.BigInteger, default=0)
    valid_from: date | None = _col(sa.Date, nullable=True)
    valid_until: date | None = _col(sa.Date, nullable=True)
    issued_on: date | None = _col(sa.Date, nullable=True)
    terms_version: int = _col(sa.Integer, default=0)
    revoked_from: date | None = _col(sa.Date, nullable=True)
    revoke_version: int = _col(sa.Integer, default=0)
    expired_on: date | None = _col(sa.Date, nullable=True)


class ChargeFact(SQLModel, table=True):
    """A charge's two halves (accepted, settled) and its cancellation, whichever arrives first."""

    __tablename__ = "reporting_charge"
    charge_id: str = _col(sa.String(64), pk=True)
    funder_id: str | None = _col(sa.String(40), nullable=True)
    category: str | None = _col(sa.String(40), nullable=True)
    period: str | None = _col(sa.String(7), nullable=True)
    voucher_id: str | None = _col(sa.String(64), nullable=True)
    provider_id: str | None = _col(sa.String(64), nullable=True)
    units_x100: int = _sum()
    unit_price_cents: int = _sum()
    amount_cents: int = _sum()
    own_share_cents: int = _sum()
    accepted_at: datetime | None = _col(UTCDateTime(), nullable=True)
    settled_at: datetime | None = _col(UTCDateTime(), nullable=True)
    gross_cents: int = _sum()
    fee_cents: int = _sum()
    net_cents: int = _sum()
    cancelled: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    #: after corrections of the settled charge (the lowest any correction names; None: never corrected)
    units_after_x100: int | None = _col(sa.BigInteger, nullable=True)
    amount_after_cents: int | None = _col(sa.BigInteger, nullable=True)
    own_share_after_cents: int | None = _col(sa.BigInteger, nullable=True)


class CategoryMonth(SQLModel, table=True):
    """Sums per funder, month (of the service) and category."""

    __tablename__ = "reporting_category_month"
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    category: str = _col(sa.String(40), pk=True)
    #: vouchers issued, in force, expired and revoked in the month, and the units per month granted by those
    #: in force (see ``handlers.voucher_months``)
    #: distinct clients with charges, and with settled charges, in the month (``ClientMonth``)
    clients_served: int = _sum()
    clients_settled: int = _sum()
    vouchers_issued: int = _sum()
    vouchers_active: int = _sum()
    vouchers_expired: int = _sum()
    vouchers_revoked: int = _sum()
    units_granted_x100: int = _sum()
    charges: int = _sum()
    units_x100: int = _sum()
    charged_cents: int = _sum()
    own_share_cents: int = _sum()
    #: sum of unit price (cents) x units (hundredths): the unit-weighted price's numerator
    priced_x100: int = _sum()
    settled_charges: int = _sum()
    settled_gross_cents: int = _sum()
    fee_cents: int = _sum()
    net_cents: int = _sum()
    settled_within_14_days: int = _sum()
    worst_delay_seconds: int = _sum()


class ClientMonth(SQLModel, table=True):
    """A client's charges and settled charges per funder, month and category (distinct clients)."""

    __tablename__ = "reporting_client_month"
    __table_args__ = (sa.Index("ix_reporting_client_month_client_key", "client_key"),)
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    category: str = _col(sa.String(40), pk=True)
    #: the pseudonymous client reference, or ``voucher:<id>`` while the voucher's issue is not yet folded
    client_key: str = _col(sa.String(210), pk=True)
    charges: int = _sum()
    settled_charges: int = _sum()


class VoucherMonth(SQLModel, table=True):
    """What was charged on one voucher with one provider in a month (distinct clients, market shares,
    utilisation)."""

    __tablename__ = "reporting_voucher_month"
    __table_args__ = (sa.Index("ix_reporting_voucher_month_funder_period", "funder_id", "period"),)
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    category: str = _col(sa.String(40), pk=True)
    provider_id: str = _col(sa.String(64), pk=True)
    voucher_id: str = _col(sa.String(64), pk=True)
    charges: int = _sum()
    units_x100: int = _sum()
    charged_cents: int = _sum()
    settled_charges: int = _sum()


class ClientTotalMonth(SQLModel, table=True):
    """A client's charges and settled charges per funder and month across categories (the total row's
    distinct clients); same counters as ``ClientMonth`` summed over the categories."""

    __tablename__ = "reporting_client_total_month"
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    client_key: str = _col(sa.String(210), pk=True)
    charges: int = _sum()
    settled_charges: int = _sum()


class FunderMonth(SQLModel, table=True):
    """Distinct clients with charges, and with settled charges, per funder and month across categories
    (the rows of ``ClientTotalMonth`` whose counters are above zero)."""

    __tablename__ = "reporting_funder_month"
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    clients_served: int = _sum()
    clients_settled: int = _sum()


class ProviderMonth(SQLModel, table=True):
    """Per funder, month, category and provider: its clients (vouchers with charges, a client holding one
    voucher of a category), charges, units and euros charged (market shares)."""

    __tablename__ = "reporting_provider_month"
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    category: str = _col(sa.String(40), pk=True)
    provider_id: str = _col(sa.String(64), pk=True)
    clients: int = _sum()
    charges: int = _sum()
    units_x100: int = _sum()
    charged_cents: int = _sum()


class PriceListFact(SQLModel, table=True):
    __tablename__ = "reporting_price_list"
    __table_args__ = (sa.Index("ix_reporting_price_list_funder_category", "funder_id", "category"),)
    price_list_id: str = _col(sa.String(64), pk=True)
    provider_id: str = _col(sa.String(64))
    funder_id: str = _col(sa.String(40))
    category: str = _col(sa.String(40))
    unit: str = _col(sa.String(20))
    unit_price_cents: int = _col(sa.BigInteger)
    effective_from: date = _col(sa.Date)
    published_at: datetime = _col(UTCDateTime())


class ApprovalChange(SQLModel, table=True):
    """One step of an approval's life (approved, suspended, reinstated, revoked) from a date."""

    __tablename__ = "reporting_approval_change"
    __table_args__ = (sa.Index("ix_reporting_approval_change_funder", "funder_id"),)
    event_id: str = _col(sa.String(64), pk=True)
    approval_id: str = _col(sa.String(64))
    provider_id: str = _col(sa.String(64))
    funder_id: str = _col(sa.String(40))
    category: str = _col(sa.String(40))
    kind: str = _col(sa.String(16))
    effective_from: date = _col(sa.Date)
    at: datetime = _col(UTCDateTime())


SWITCH = "previous_provider_id IS NOT NULL"
ORPHAN_SWITCH = "client IS NULL AND previous_provider_id IS NOT NULL"


class ProviderChoice(SQLModel, table=True):
    """A client's choice of provider; a switch when it names a previous provider."""

    __tablename__ = "reporting_choice"
    __table_args__ = (sa.Index("ix_reporting_choice_funder_period", "funder_id", "period"),
                      sa.Index("ix_reporting_choice_period", "period"),
                      # the switches report reads this index only (migration 0007)
                      sa.Index("ix_reporting_choice_switches", "period", "funder_id", "age_band", "client",
                               "voucher_id", postgresql_where=sa.text(SWITCH), sqlite_where=sa.text(SWITCH)),
                      # switches folded before their voucher's issue: filled in when it comes
                      sa.Index("ix_reporting_choice_orphan_switches", "voucher_id",
                               postgresql_where=sa.text(ORPHAN_SWITCH), sqlite_where=sa.text(ORPHAN_SWITCH)))
    event_id: str = _col(sa.String(64), pk=True)
    funder_id: str = _col(sa.String(40))
    period: str = _col(sa.String(7))
    category: str = _col(sa.String(40))
    voucher_id: str = _col(sa.String(64))
    provider_id: str = _col(sa.String(64))
    previous_provider_id: str | None = _col(sa.String(64), nullable=True)
    #: a switch's client and age band, from its voucher's issue (NULL until reporting has folded it)
    client: str | None = _col(sa.String(200), nullable=True)
    age_band: str | None = _col(sa.String(16), nullable=True)


class SwitchMonth(SQLModel, table=True):
    """Provider switches per funder, month and the switching clients' age band (``*``: all bands), and the
    distinct clients behind them (migration 0008). The fold recounts a (funder, month) from its switch rows
    in ``reporting_choice`` whenever a batch adds or completes one, so the counts never depend on order."""

    __tablename__ = "reporting_switch_month"
    __table_args__ = (sa.Index("ix_reporting_switch_month_period", "period"),)
    funder_id: str = _col(sa.String(40), pk=True)
    period: str = _col(sa.String(7), pk=True)
    age_band: str = _col(sa.String(16), pk=True)
    switches: int = _sum()
    clients: int = _sum()


class Feedback(SQLModel, table=True):
    """A client's feedback on its voucher's service in a month (not a read model: reporting's own)."""

    __tablename__ = "reporting_feedback"
    __table_args__ = (sa.UniqueConstraint("voucher_id", "period", name="uq_reporting_feedback_voucher_period"),
                      sa.Index("ix_reporting_feedback_period", "period"))
    feedback_id: str = _col(sa.String(64), pk=True)
    voucher_id: str = _col(sa.String(64))
    period: str = _col(sa.String(7))
    rating: int = _col(sa.Integer)
    text: str | None = _col(sa.Text, nullable=True)
    given_at: datetime = _col(UTCDateTime())


#: the read models ``seteli-reporting rebuild`` empties and folds again from the archive
READ_MODELS = (FunderFigures, FunderMember, VoucherFact, ChargeFact, CategoryMonth, ClientMonth, VoucherMonth,
               PriceListFact, ApprovalChange, ProviderChoice, ClientTotalMonth, FunderMonth, ProviderMonth,
               SwitchMonth)
