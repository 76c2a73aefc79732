"""webhook deliveries that failed every attempt are parked (tried again hourly and on the operator's
retry), no longer failed for good: the ones failed so far become parked; ``failed`` is left to deliveries
whose provider's webhook is gone

Revision ID: 0014
"""
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE payments_webhook_delivery SET status = 'parked' "
               "WHERE status = 'failed' AND (last_error IS NULL OR last_error <> 'webhook_removed')")


def downgrade() -> None:
    op.execute("UPDATE payments_webhook_delivery SET status = 'failed' WHERE status = 'parked'")
