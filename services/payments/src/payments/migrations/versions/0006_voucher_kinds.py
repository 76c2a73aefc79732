"""voucher kinds: the projection keeps the voucher's kind and kind-specific terms; a charge records
the client fee of a client voucher

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_voucher") as batch:
        batch.add_column(sa.Column("kind", sa.String(24), nullable=False, server_default="service_voucher"))
        batch.add_column(sa.Column("budget_cents", sa.BigInteger))
        batch.add_column(sa.Column("categories", sa.JSON))
        batch.add_column(sa.Column("max_value_per_unit_cents", sa.Integer))
        batch.add_column(sa.Column("client_fee_cents", sa.Integer))
        batch.add_column(sa.Column("value_table_version", sa.String(40)))
    with op.batch_alter_table("payments_charge") as batch:
        batch.add_column(sa.Column("client_fee_cents", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("payments_charge") as batch:
        batch.drop_column("client_fee_cents")
    with op.batch_alter_table("payments_voucher") as batch:
        for column in ("value_table_version", "client_fee_cents", "max_value_per_unit_cents", "categories",
                       "budget_cents", "kind"):
            batch.drop_column(column)
