"""the decision's optional statistical attributes on the voucher (age band, municipality of
residence), passed on to reporting in VoucherIssued

Revision ID: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.add_column(sa.Column("age_band", sa.String(8)))
        batch.add_column(sa.Column("municipality_of_residence", sa.String(3)))


def downgrade() -> None:
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.drop_column("municipality_of_residence")
        batch.drop_column("age_band")
