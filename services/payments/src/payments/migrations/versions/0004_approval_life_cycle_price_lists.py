"""approvals projection learns the life cycle (suspension, reinstatement, revocation); price lists
projection; charges record their tariff and whether a registered price was found

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_approval") as batch:
        # a suspension may arrive before the approval it suspends
        batch.alter_column("approved_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.add_column(sa.Column("approval_id", sa.String(64)))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="approved"))
        batch.add_column(sa.Column("not_in_force_from", sa.Date))
        batch.add_column(sa.Column("status_changed_at", UTCDateTime()))
        batch.add_column(sa.Column("status_reason", sa.String(64)))
    op.create_table(
        "payments_price_list",
        sa.Column("price_list_id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.Column("tariffs", sa.JSON, nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_payments_price_list_lookup", "payments_price_list",
                    ["provider_id", "funder_id", "category", "effective_from"])
    # charges accepted before this were priced without a registered price
    with op.batch_alter_table("payments_charge") as batch:
        batch.add_column(sa.Column("tariff", sa.String(20)))
        batch.add_column(sa.Column("price_registered", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("registered_price_cents", sa.Integer))
        batch.add_column(sa.Column("price_list_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("payments_charge") as batch:
        batch.drop_column("price_list_id")
        batch.drop_column("registered_price_cents")
        batch.drop_column("price_registered")
        batch.drop_column("tariff")
    op.drop_table("payments_price_list")
    op.execute("DELETE FROM payments_approval WHERE approved_at IS NULL")
    with op.batch_alter_table("payments_approval") as batch:
        batch.drop_column("status_reason")
        batch.drop_column("status_changed_at")
        batch.drop_column("not_in_force_from")
        batch.drop_column("status")
        batch.drop_column("approval_id")
        batch.alter_column("approved_at", existing_type=sa.DateTime(timezone=True), nullable=False)
