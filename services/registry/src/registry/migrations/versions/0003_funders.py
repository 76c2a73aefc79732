"""funders: the register of municipalities, counties and joint authorities with their contract terms

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_funder",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("operator_fee_rate", sa.String(16), nullable=False),
        sa.Column("settlement_days", sa.Integer, nullable=False),
        sa.Column("contact_email", sa.String(254)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("registry_funder")
