"""funders' charging deadline: a service is charged within this many days of its date (default 90)

Revision ID: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registry_funder") as batch:
        batch.add_column(sa.Column("charge_deadline_days", sa.Integer, nullable=False, server_default="90"))


def downgrade() -> None:
    with op.batch_alter_table("registry_funder") as batch:
        batch.drop_column("charge_deadline_days")
