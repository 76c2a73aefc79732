"""the archive indexed in time order: the rebuild folds it in the order the events were delivered, near enough

Revision ID: 0009
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reporting_event_time_id", "reporting_event", ["time", "id"])


def downgrade() -> None:
    op.drop_index("ix_reporting_event_time_id", table_name="reporting_event")
