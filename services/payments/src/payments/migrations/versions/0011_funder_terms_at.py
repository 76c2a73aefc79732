"""the funder projection's time of the terms it holds (FunderRegistered, FunderTermsChanged in any order)

Revision ID: 0011
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_funder") as batch:
        batch.add_column(sa.Column("terms_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("payments_funder") as batch:
        batch.drop_column("terms_at")
