"""monitoring read models: vouchers, charges, sums per category and month, voucher months, price
lists, approval changes, provider choices; clients' feedback

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _sums(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in names]


def upgrade() -> None:
    op.create_table(
        "reporting_voucher",
        sa.Column("voucher_id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False, index=True),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("client_ref", sa.String(200)),
        sa.Column("age_band", sa.String(16)),
        sa.Column("municipality", sa.String(8)),
        sa.Column("unit", sa.String(20)),
        sa.Column("period_kind", sa.String(20)),
        *_sums("units_per_period_x100"),
        sa.Column("valid_from", sa.Date),
        sa.Column("valid_until", sa.Date),
        sa.Column("issued_on", sa.Date),
        sa.Column("terms_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revoked_from", sa.Date),
        sa.Column("revoke_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expired_on", sa.Date),
    )
    op.create_table(
        "reporting_charge",
        sa.Column("charge_id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40)),
        sa.Column("category", sa.String(40)),
        sa.Column("period", sa.String(7)),
        sa.Column("voucher_id", sa.String(64)),
        sa.Column("provider_id", sa.String(64)),
        *_sums("units_x100", "unit_price_cents", "amount_cents", "own_share_cents"),
        sa.Column("accepted_at", UTCDateTime()),
        sa.Column("settled_at", UTCDateTime()),
        *_sums("gross_cents", "fee_cents", "net_cents"),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "reporting_category_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        *_sums("charges", "units_x100", "charged_cents", "own_share_cents", "priced_x100", "settled_charges",
               "settled_gross_cents", "fee_cents", "net_cents", "settled_within_14_days", "worst_delay_seconds"),
    )
    op.create_table(
        "reporting_voucher_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("voucher_id", sa.String(64), primary_key=True),
        *_sums("charges", "units_x100", "charged_cents", "settled_charges"),
    )
    op.create_index("ix_reporting_voucher_month_funder_period", "reporting_voucher_month", ["funder_id", "period"])
    op.create_table(
        "reporting_price_list",
        sa.Column("price_list_id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger, nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_reporting_price_list_funder_category", "reporting_price_list", ["funder_id", "category"])
    op.create_table(
        "reporting_approval_change",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_reporting_approval_change_funder", "reporting_approval_change", ["funder_id"])
    op.create_table(
        "reporting_choice",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("previous_provider_id", sa.String(64)),
    )
    op.create_index("ix_reporting_choice_funder_period", "reporting_choice", ["funder_id", "period"])
    op.create_table(
        "reporting_feedback",
        sa.Column("feedback_id", sa.String(64), primary_key=True),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("text", sa.Text),
        sa.Column("given_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("voucher_id", "period", name="uq_reporting_feedback_voucher_period"),
    )


def downgrade() -> None:
    for table in ("reporting_feedback", "reporting_choice", "reporting_approval_change", "reporting_price_list",
                  "reporting_voucher_month", "reporting_category_month", "reporting_charge", "reporting_voucher"):
        op.drop_table(table)
