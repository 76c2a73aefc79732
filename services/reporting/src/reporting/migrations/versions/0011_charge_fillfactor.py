"""room in the charge facts' pages for their settlement: ``reporting_charge`` with fillfactor 60

A charge fact is inserted when the first half of the charge arrives and rewritten once when the other half
(usually the settlement) does. In full pages (fillfactor 100, the default) that rewrite cannot stay on its
page: PostgreSQL puts the new row version elsewhere and adds a primary-key entry for it. With room left on
each page the rewrite is a heap-only update (no index entry; none of the columns it changes is indexed): the
settled charges' ``UPDATE ... FROM unnest`` of reporting's fold took 0.56-0.66 s instead of 0.81-1.02 s for
20,000 charges (bench/README.md, 2026-12-07). Only pages written after this change get the room. The
rebuild's copies of the read models take each table's storage parameters with them (``usecases``).

Revision ID: 0011
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reporting_charge SET (fillfactor = 60)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reporting_charge RESET (fillfactor)")
