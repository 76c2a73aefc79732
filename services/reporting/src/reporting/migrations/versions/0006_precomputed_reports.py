"""precomputed report figures: distinct clients per funder and month across categories, per provider sums
(market shares), indexes on the choices' and feedback's month (operator-wide
switches and feedback)

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _sum(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "reporting_client_total_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("client_key", sa.String(210), primary_key=True),
        _sum("charges"), _sum("settled_charges"),
    )
    op.create_table(
        "reporting_funder_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        _sum("clients_served"), _sum("clients_settled"),
    )
    op.create_table(
        "reporting_provider_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        _sum("clients"), _sum("charges"), _sum("units_x100"), _sum("charged_cents"),
    )
    op.create_index("ix_reporting_choice_period", "reporting_choice", ["period"])
    op.create_index("ix_reporting_feedback_period", "reporting_feedback", ["period"])
    # the figures of what was folded before this revision: from the rows kept per client and voucher
    op.execute("INSERT INTO reporting_client_total_month (funder_id, period, client_key, charges, settled_charges) "
               "SELECT funder_id, period, client_key, SUM(charges), SUM(settled_charges) FROM reporting_client_month "
               "GROUP BY funder_id, period, client_key")
    op.execute("INSERT INTO reporting_funder_month (funder_id, period, clients_served, clients_settled) "
               "SELECT funder_id, period, SUM(CASE WHEN charges > 0 THEN 1 ELSE 0 END), "
               "SUM(CASE WHEN settled_charges > 0 THEN 1 ELSE 0 END) FROM reporting_client_total_month "
               "GROUP BY funder_id, period")
    op.execute("INSERT INTO reporting_provider_month (funder_id, period, category, provider_id, clients, charges, "
               "units_x100, charged_cents) SELECT funder_id, period, category, provider_id, "
               "SUM(CASE WHEN charges > 0 THEN 1 ELSE 0 END), SUM(charges), SUM(units_x100), SUM(charged_cents) "
               "FROM reporting_voucher_month GROUP BY funder_id, period, category, provider_id "
               "HAVING SUM(charges) <> 0 OR SUM(units_x100) <> 0 OR SUM(charged_cents) <> 0")


def downgrade() -> None:
    op.drop_index("ix_reporting_feedback_period", "reporting_feedback")
    op.drop_index("ix_reporting_choice_period", "reporting_choice")
    op.drop_table("reporting_provider_month")
    op.drop_table("reporting_funder_month")
    op.drop_table("reporting_client_total_month")
