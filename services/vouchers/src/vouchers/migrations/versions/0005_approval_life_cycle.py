"""approvals projection learns the life cycle: suspension, reinstatement, revocation

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
    with op.batch_alter_table("vouchers_approved_provider") as batch:
        # a suspension may arrive before the approval it suspends
        batch.alter_column("approved_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.add_column(sa.Column("approval_id", sa.String(64)))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="approved"))
        batch.add_column(sa.Column("not_in_force_from", sa.Date))
        batch.add_column(sa.Column("status_changed_at", UTCDateTime()))
        batch.add_column(sa.Column("status_reason", sa.String(64)))


def downgrade() -> None:
    op.execute("DELETE FROM vouchers_approved_provider WHERE approved_at IS NULL")
    with op.batch_alter_table("vouchers_approved_provider") as batch:
        batch.drop_column("status_reason")
        batch.drop_column("status_changed_at")
        batch.drop_column("not_in_force_from")
        batch.drop_column("status")
        batch.drop_column("approval_id")
        batch.alter_column("approved_at", existing_type=sa.DateTime(timezone=True), nullable=False)
