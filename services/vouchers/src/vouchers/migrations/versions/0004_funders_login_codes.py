"""funders projection; client login codes (salted hashes) and failed light logins for throttling

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import BigIntPK, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vouchers_funder",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
    )
    # vouchers issued before this have no client login code: their funder issues one
    # (POST /vouchers/{id}/client-login-code); until then they cannot be logged in to
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.add_column(sa.Column("client_login_salt", sa.String(32)))
        batch.add_column(sa.Column("client_login_hash", sa.String(64)))
        batch.add_column(sa.Column("client_login_issued_at", UTCDateTime()))
    op.create_table(
        "vouchers_login_failure",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("voucher_id", sa.String(64)),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_vouchers_login_failure_voucher", "vouchers_login_failure", ["voucher_id", "at"])
    op.create_index("ix_vouchers_login_failure_source", "vouchers_login_failure", ["source", "at"])
    op.create_index("ix_vouchers_login_failure_at", "vouchers_login_failure", ["at"])


def downgrade() -> None:
    op.drop_table("vouchers_login_failure")
    with op.batch_alter_table("vouchers_voucher") as batch:
        batch.drop_column("client_login_issued_at")
        batch.drop_column("client_login_hash")
        batch.drop_column("client_login_salt")
    op.drop_table("vouchers_funder")
