"""provider switches by age band kept by the fold: each choice row carries its voucher's client and age band
(filled when the voucher's issue is folded, before or after the choice), so the report reads one table

Revision ID: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SWITCH = "previous_provider_id IS NOT NULL"
ORPHAN = "client IS NULL AND previous_provider_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("reporting_choice") as batch:
        batch.add_column(sa.Column("client", sa.String(200)))
        batch.add_column(sa.Column("age_band", sa.String(16)))
    # what was folded before this revision: from the vouchers' facts
    op.execute("UPDATE reporting_choice SET client = (SELECT v.client_ref FROM reporting_voucher v "
               "WHERE v.voucher_id = reporting_choice.voucher_id), age_band = (SELECT v.age_band FROM "
               "reporting_voucher v WHERE v.voucher_id = reporting_choice.voucher_id) WHERE " + SWITCH)
    op.create_index("ix_reporting_choice_switches", "reporting_choice",
                    ["period", "funder_id", "age_band", "client", "voucher_id"],
                    postgresql_where=sa.text(SWITCH), sqlite_where=sa.text(SWITCH))
    op.create_index("ix_reporting_choice_orphan_switches", "reporting_choice", ["voucher_id"],
                    postgresql_where=sa.text(ORPHAN), sqlite_where=sa.text(ORPHAN))


def downgrade() -> None:
    op.drop_index("ix_reporting_choice_orphan_switches", table_name="reporting_choice")
    op.drop_index("ix_reporting_choice_switches", table_name="reporting_choice")
    with op.batch_alter_table("reporting_choice") as batch:
        batch.drop_column("age_band")
        batch.drop_column("client")
