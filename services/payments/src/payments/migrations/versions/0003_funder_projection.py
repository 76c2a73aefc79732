"""funders projection: each funder's contract fee rate, from FunderRegistered

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments_funder",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("operator_fee_rate", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("payments_funder")
