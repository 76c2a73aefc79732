"""voucher projection: the decision version of its terms (VoucherAmended) and revocation (VoucherRevoked)

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_voucher") as batch:
        batch.add_column(sa.Column("decision_version", sa.Integer))
        batch.add_column(sa.Column("revoked_at", UTCDateTime()))
        batch.add_column(sa.Column("revoked_from", sa.Date))


def downgrade() -> None:
    with op.batch_alter_table("payments_voucher") as batch:
        batch.drop_column("revoked_from")
        batch.drop_column("revoked_at")
        batch.drop_column("decision_version")
