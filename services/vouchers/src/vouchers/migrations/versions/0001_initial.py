"""vouchers: vouchers, approved-provider projection, outbox, inbox

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "vouchers_voucher",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("decision_ref", sa.String(64), nullable=False),
        sa.Column("client_ref", sa.String(64), nullable=False, index=True),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("units_per_period_x100", sa.Integer, nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("value_per_unit_cents", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.Date, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("funder_id", "decision_ref", name="uq_vouchers_decision"),
    )
    op.create_table(
        "vouchers_approved_provider",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vouchers_approved_provider")
    op.drop_table("vouchers_voucher")
    drop_messaging_tables(op)
