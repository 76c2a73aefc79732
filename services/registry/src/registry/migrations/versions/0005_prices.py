"""prices: price lists per provider, funder and category (the whole history), and the index the
public comparison needs on approvals

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
    op.create_table(
        "registry_price_list",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), sa.ForeignKey("registry_provider.id"), nullable=False),
        sa.Column("funder_id", sa.String(40), sa.ForeignKey("registry_funder.funder_id"), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.Column("weekday_cents", sa.Integer),
        sa.Column("weekday_evening_cents", sa.Integer),
        sa.Column("saturday_cents", sa.Integer),
        sa.Column("sunday_cents", sa.Integer),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime()),
        sa.Column("published_at", UTCDateTime()),
    )
    op.create_index("ix_registry_price_list_in_force", "registry_price_list",
                    ["funder_id", "category", "status", "provider_id", "effective_from"])
    op.create_index("ix_registry_price_list_provider", "registry_price_list", ["provider_id", "created_at", "id"])
    op.create_index("ix_registry_approval_funder_category", "registry_approval",
                    ["funder_id", "category", "provider_id"])


def downgrade() -> None:
    op.drop_index("ix_registry_approval_funder_category", "registry_approval")
    op.drop_index("ix_registry_price_list_provider", "registry_price_list")
    op.drop_index("ix_registry_price_list_in_force", "registry_price_list")
    op.drop_table("registry_price_list")
