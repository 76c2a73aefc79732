"""the portal's sign-in sessions kept on the server (the cookie holds only an opaque id)

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_session",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("replaced_at", UTCDateTime()),
    )
    op.create_index("ix_portal_session_family", "portal_session", ["family"])
    op.create_index("ix_portal_session_ends_at", "portal_session", ["ends_at"])
    op.create_index("ix_portal_session_last_seen_at", "portal_session", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("portal_session")
