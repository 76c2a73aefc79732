"""outbox: the W3C traceparent of the span that wrote each row, published as the message's header (``tracing``)

Revision ID: shared_0002
"""
import sqlalchemy as sa
from alembic import op

revision = "shared_0002"
down_revision = "shared_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("traceparent")
