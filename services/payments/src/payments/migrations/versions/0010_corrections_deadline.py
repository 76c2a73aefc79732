"""corrections after settlement and the funder's charging deadline: the corrections of settled charges
(append-only: what each removes, the fee given back, the settlement it corrects and the one it offset),
the charge's running totals of what corrections removed, a settlement's count of offset corrections,
and the funder projection's charging deadline (days after the service date)

Revision ID: 0010
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments_charge_correction",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("charge_id", sa.String(64), sa.ForeignKey("payments_charge.id"), nullable=False, index=True),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("service_date", sa.Date, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("units_x100", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("own_share_cents", sa.BigInteger, nullable=False),
        sa.Column("client_fee_cents", sa.BigInteger),
        sa.Column("fee_cents", sa.BigInteger, nullable=False),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("corrected_settlement_id", sa.String(64), nullable=False),
        sa.Column("offset_settlement_id", sa.String(64), index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_payments_charge_correction_pending", "payments_charge_correction",
                    ["funder_id", "provider_id", "created_at"])
    with op.batch_alter_table("payments_charge") as batch:
        batch.add_column(sa.Column("corrected_units_x100", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("corrected_amount_cents", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("payments_settlement") as batch:
        batch.add_column(sa.Column("correction_count", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("payments_funder") as batch:
        batch.add_column(sa.Column("charge_deadline_days", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("payments_funder") as batch:
        batch.drop_column("charge_deadline_days")
    with op.batch_alter_table("payments_settlement") as batch:
        batch.drop_column("correction_count")
    with op.batch_alter_table("payments_charge") as batch:
        batch.drop_column("corrected_amount_cents")
        batch.drop_column("corrected_units_x100")
    op.drop_index("ix_payments_charge_correction_pending", "payments_charge_correction")
    op.drop_table("payments_charge_correction")
