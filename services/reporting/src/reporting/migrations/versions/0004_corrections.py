"""a charge's figures after corrections (ChargeCorrected)

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
COLUMNS = ("units_after_x100", "amount_after_cents", "own_share_after_cents")


def upgrade() -> None:
    with op.batch_alter_table("reporting_charge") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("reporting_charge") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
