"""reporting: event archive, funder figures, outbox, inbox

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
COUNTERS = ("providers_approved", "approvals", "vouchers_issued", "clients", "provider_choices",
            "charges_accepted", "units_charged_x100", "charges_settled", "settlements")
MONEY = ("charged_cents", "own_share_cents", "settled_gross_cents", "fee_cents", "net_cents")


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "reporting_event",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False, index=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.Text, nullable=False),
    )
    op.create_table(
        "reporting_funder_figures",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        *[sa.Column(c, sa.Integer, nullable=False, server_default="0") for c in COUNTERS],
        *[sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in MONEY],
    )
    op.create_table(
        "reporting_funder_member",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("member_id", sa.String(64), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("reporting_funder_member")
    op.drop_table("reporting_funder_figures")
    op.drop_table("reporting_event")
    drop_messaging_tables(op)
