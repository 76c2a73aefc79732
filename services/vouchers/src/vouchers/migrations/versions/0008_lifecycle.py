"""voucher life cycle: carry-over rule, expiry and exhaustion times; the usage projection
(ChargeAccepted), price lists and provider names for the client's comparison

Revision ID: 0008
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.add_column(sa.Column("carry_over", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("expired_at", UTCDateTime()))
        batch.add_column(sa.Column("exhausted_at", UTCDateTime()))
    op.create_table(
        "vouchers_usage",
        sa.Column("charge_id", sa.String(64), primary_key=True),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("service_date", sa.Date, nullable=False),
        sa.Column("units_x100", sa.Integer, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("own_share_cents", sa.BigInteger, nullable=False),
        sa.Column("accepted_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_vouchers_usage_voucher_date", "vouchers_usage", ["voucher_id", "service_date"])
    op.create_table(
        "vouchers_price_list",
        sa.Column("price_list_id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_vouchers_price_list_lookup", "vouchers_price_list",
                    ["funder_id", "category", "provider_id", "effective_from"])
    op.create_table(
        "vouchers_provider",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("named_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vouchers_provider")
    op.drop_index("ix_vouchers_price_list_lookup", "vouchers_price_list")
    op.drop_table("vouchers_price_list")
    op.drop_index("ix_vouchers_usage_voucher_date", "vouchers_usage")
    op.drop_table("vouchers_usage")
    with op.batch_alter_table("vouchers_voucher") as batch:
        for column in ("exhausted_at", "expired_at", "carry_over"):
            batch.drop_column(column)
