"""webhook secret rotation: the secret before the latest rotation and until when it still signs deliveries
beside the new one (``X-Seteli-Signature: t=...,v1=<new>,v1=<old>``)

Revision ID: 0016
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_webhook") as batch:
        batch.add_column(sa.Column("previous_secret", sa.String(100), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments_webhook") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret")
