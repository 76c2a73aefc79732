"""charge intake: the voucher code in the voucher projection (charging by code), Idempotency-Key
records per provider, and the cancellation time of a charge a provider cancelled

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
    with op.batch_alter_table("payments_voucher") as batch:
        batch.add_column(sa.Column("voucher_code", sa.String(16)))
        batch.create_index("ix_payments_voucher_voucher_code", ["voucher_code"])
    with op.batch_alter_table("payments_charge") as batch:
        batch.add_column(sa.Column("cancelled_at", UTCDateTime()))
    op.create_table(
        "payments_idempotency",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("operation", sa.String(40), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_body", sa.Text),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_payments_idempotency_expires_at", "payments_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_idempotency_expires_at", table_name="payments_idempotency")
    op.drop_table("payments_idempotency")
    with op.batch_alter_table("payments_charge") as batch:
        batch.drop_column("cancelled_at")
    with op.batch_alter_table("payments_voucher") as batch:
        batch.drop_index("ix_payments_voucher_voucher_code")
        batch.drop_column("voucher_code")
