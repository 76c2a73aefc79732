"""the archive's arrival order: a sequence number per archived event, so a rebuild that commits as it goes
can fold at the end exactly the events archived while it ran (``usecases.rebuild``)

Events archived before this migration keep no number (they all precede any rebuild started after it).
The column is added without a default, so the table is not rewritten; the archive takes the number from
the sequence as it inserts (``handlers.archive_many``). SQLite (the handlers' own tests) has no sequence:
its rebuild is one transaction.

Revision ID: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reporting_event", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_reporting_event_seq", "reporting_event", ["seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE reporting_event_seq AS bigint OWNED BY reporting_event.seq")


def downgrade() -> None:
    op.drop_index("ix_reporting_event_seq", table_name="reporting_event")
    op.drop_column("reporting_event", "seq")  # the sequence, owned by the column, goes with it
