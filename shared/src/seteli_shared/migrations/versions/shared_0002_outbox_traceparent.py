"""outbox: the W3C traceparent of the span that wrote each row, published as the message's header (``tracing``)

Revision ID: shared_0002

The shared branch runs beside each service's own, in no fixed order: on a new database the service's first
migration (``messaging.create_messaging_tables``) makes the outbox with this column already, before or after this
revision; on a database made before it, this revision adds the column.
"""
import sqlalchemy as sa
from alembic import op

revision = "shared_0002"
down_revision = "shared_0001"
branch_labels = None
depends_on = None


def _outbox_columns() -> set[str] | None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("outbox"):
        return None
    return {c["name"] for c in inspector.get_columns("outbox")}


def upgrade() -> None:
    columns = _outbox_columns()
    if columns is not None and "traceparent" not in columns:
        op.add_column("outbox", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    columns = _outbox_columns()
    if columns is not None and "traceparent" in columns:
        with op.batch_alter_table("outbox") as batch:
            batch.drop_column("traceparent")
