"""voucher kinds: the voucher's kind and its kind-specific terms, and the funders' value (formula) tables

Revision ID: 0007
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.add_column(sa.Column("kind", sa.String(24), nullable=False, server_default="service_voucher"))
        batch.add_column(sa.Column("value_table_version", sa.String(40)))
        batch.add_column(sa.Column("household_size", sa.Integer))
        batch.add_column(sa.Column("max_value_per_unit_cents", sa.Integer))
        batch.add_column(sa.Column("client_fee_cents", sa.Integer))
        batch.add_column(sa.Column("budget_cents", sa.BigInteger))
        batch.add_column(sa.Column("categories", sa.JSON))
    op.create_table(
        "vouchers_value_table",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("table_version", sa.String(40), primary_key=True),
        sa.Column("max_value_per_unit_cents", sa.Integer, nullable=False),
        sa.Column("min_value_per_unit_cents", sa.Integer, nullable=False),
        sa.Column("income_limits_cents", sa.JSON, nullable=False),
        sa.Column("percentages", sa.JSON, nullable=False),
        sa.Column("extra_person_limit_cents", sa.Integer, nullable=False),
        sa.Column("extra_person_points", sa.String(16), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vouchers_value_table")
    with op.batch_alter_table("vouchers_voucher") as batch:
        for column in ("categories", "budget_cents", "client_fee_cents", "max_value_per_unit_cents",
                       "household_size", "value_table_version", "kind"):
            batch.drop_column(column)
