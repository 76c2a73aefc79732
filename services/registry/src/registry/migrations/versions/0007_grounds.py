"""written grounds of decisions: a rejected application or price list, a suspended or revoked approval

Revision ID: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = {"registry_application": "grounds", "registry_approval": "status_grounds",
           "registry_approval_change": "grounds", "registry_price_list": "grounds"}


def upgrade() -> None:
    for table, column in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, sa.String(4000), nullable=True))


def downgrade() -> None:
    for table, column in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
