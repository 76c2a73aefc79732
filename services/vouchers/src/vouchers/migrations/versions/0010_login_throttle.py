"""failed light logins counted per key (an address, a voucher code from an address, a voucher code from
every address) instead of one row per failure: the throttle slows each key progressively and never
refuses the right code to an address because of other addresses' failures

Revision ID: 0010
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import BigIntPK, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the failures of the last 15 minutes are not carried over: a throttle's memory, not a record
    op.drop_table("vouchers_login_failure")
    op.create_table(
        "vouchers_login_throttle",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_vouchers_login_throttle_last_failure_at", "vouchers_login_throttle", ["last_failure_at"])


def downgrade() -> None:
    op.drop_table("vouchers_login_throttle")
    op.create_table(
        "vouchers_login_failure",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("voucher_id", sa.String(64)),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_vouchers_login_failure_voucher", "vouchers_login_failure", ["voucher_id", "at"])
    op.create_index("ix_vouchers_login_failure_source", "vouchers_login_failure", ["source", "at"])
    op.create_index("ix_vouchers_login_failure_at", "vouchers_login_failure", ["at"])
