"""registry: providers, approvals, outbox, inbox

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "registry_provider",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("business_id", sa.String(9), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("iban", sa.String(34), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "registry_approval",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), sa.ForeignKey("registry_provider.id"), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("provider_id", "funder_id", "category", name="uq_registry_approval"),
    )


def downgrade() -> None:
    op.drop_table("registry_approval")
    op.drop_table("registry_provider")
    drop_messaging_tables(op)
