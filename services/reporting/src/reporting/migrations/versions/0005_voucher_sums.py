"""distinct clients (with charges, with settled charges) and vouchers issued, in force, expired, revoked and
units granted per funder, month and category; clients per month

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
COLUMNS = ("clients_served", "clients_settled", "vouchers_issued", "vouchers_active", "vouchers_expired", "vouchers_revoked", "units_granted_x100")


def upgrade() -> None:
    with op.batch_alter_table("reporting_category_month") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "reporting_client_month",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("client_key", sa.String(210), primary_key=True),
        sa.Column("charges", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("settled_charges", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_reporting_client_month_client_key", "reporting_client_month", ["client_key"])


def downgrade() -> None:
    op.drop_table("reporting_client_month")
    with op.batch_alter_table("reporting_category_month") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
