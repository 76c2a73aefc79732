"""voucher code for the clients' light login

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.add_column(sa.Column("voucher_code", sa.String(16)))
        batch.create_index("ux_vouchers_voucher_code", ["voucher_code"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.drop_index("ux_vouchers_voucher_code")
        batch.drop_column("voucher_code")
