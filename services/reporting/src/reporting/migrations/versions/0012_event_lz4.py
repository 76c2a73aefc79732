"""the archive's envelopes compressed with lz4 where the server has it: ``reporting_event.envelope``

Every event reporting receives is archived whole; a ``charge.settled.v2`` or ``charge.accepted.v2`` envelope
(160-420 kB of JSON) is compressed by PostgreSQL as it is stored (TOAST), with ``pglz`` unless the column says
otherwise: at month-end that is hundreds of MB through PostgreSQL's slow compressor on the cores the fold shares.
``lz4`` compresses JSON several times as fast (and reads back faster). Only values written after this change are
lz4; older ones stay readable as they are. A server built without lz4 keeps ``pglz`` (the statement is skipped).

Revision ID: 0012
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_LZ4 = """
DO $$
BEGIN
    ALTER TABLE reporting_event ALTER COLUMN envelope SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 not available: the archive stays pglz';
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_LZ4)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reporting_event ALTER COLUMN envelope SET COMPRESSION default")
