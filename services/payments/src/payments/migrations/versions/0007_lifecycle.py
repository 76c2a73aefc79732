"""voucher life cycle: the carry-over rule in the voucher projection, and the history of provider choices

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
    with op.batch_alter_table("payments_voucher") as batch:
        batch.add_column(sa.Column("carry_over", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "payments_provider_choice",
        sa.Column("voucher_id", sa.String(64), primary_key=True),
        sa.Column("chosen_at", UTCDateTime(), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("effective_from", sa.Date, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("payments_provider_choice")
    with op.batch_alter_table("payments_voucher") as batch:
        batch.drop_column("carry_over")
