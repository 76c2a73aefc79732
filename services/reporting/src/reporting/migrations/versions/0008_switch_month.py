"""provider switches per funder, month and age band, kept by the fold (a row per band and one for all bands,
``age_band = '*'``): the switches report reads a few rows instead of counting distinct clients

Revision ID: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FILL = ("INSERT INTO reporting_switch_month (funder_id, period, age_band, switches, clients) "
        "SELECT funder_id, period, COALESCE(age_band, 'unknown'), COUNT(*), "
        "COUNT(DISTINCT COALESCE(client, 'voucher:' || voucher_id)) FROM reporting_choice "
        "WHERE previous_provider_id IS NOT NULL GROUP BY funder_id, period, COALESCE(age_band, 'unknown') "
        "UNION ALL SELECT funder_id, period, '*', COUNT(*), COUNT(DISTINCT COALESCE(client, 'voucher:' || voucher_id)) "
        "FROM reporting_choice WHERE previous_provider_id IS NOT NULL GROUP BY funder_id, period")


def upgrade() -> None:
    op.create_table(
        "reporting_switch_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("age_band", sa.String(16), primary_key=True),
        sa.Column("switches", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("clients", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_reporting_switch_month_period", "reporting_switch_month", ["period"])
    op.execute(FILL)


def downgrade() -> None:
    op.drop_index("ix_reporting_switch_month_period", table_name="reporting_switch_month")
    op.drop_table("reporting_switch_month")
