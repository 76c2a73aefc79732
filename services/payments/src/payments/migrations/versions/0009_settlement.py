"""settlement runs: the provider projection (name, IBAN, BIC), settlement runs, payouts (reason, RF
reference, payee), providers' webhooks, their deliveries and the log of every attempt

Revision ID: 0009
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import BigIntPK, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments_provider",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("iban", sa.String(34)),
        sa.Column("bic", sa.String(11)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "payments_settlement_run",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("settlement_count", sa.Integer, nullable=False),
        sa.Column("gross_cents", sa.BigInteger, nullable=False),
        sa.Column("fee_cents", sa.BigInteger, nullable=False),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("held_back_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "payments_payout",
        sa.Column("settlement_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, index=True),
        sa.Column("reason", sa.String(24), nullable=False),
        sa.Column("reference", sa.String(25), nullable=False),
        sa.Column("payee_name", sa.String(200)),
        sa.Column("iban", sa.String(34)),
        sa.Column("bic", sa.String(11)),
    )
    op.create_table(
        "payments_webhook",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "payments_webhook_delivery",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), nullable=False, index=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("notice_type", sa.String(80), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.String(300)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
    )
    op.create_table(
        "payments_webhook_attempt",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(300)),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for t in ("payments_webhook_attempt", "payments_webhook_delivery", "payments_webhook", "payments_payout",
              "payments_settlement_run", "payments_provider"):
        op.drop_table(t)
