"""payments: projections, charges, settlements, ledger, outbox, inbox

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import BigIntPK, create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "payments_voucher",
        sa.Column("voucher_id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("issued", sa.Boolean, nullable=False),
        sa.Column("units_per_period_x100", sa.Integer),
        sa.Column("period", sa.String(16)),
        sa.Column("value_per_unit_cents", sa.Integer),
        sa.Column("valid_from", sa.Date),
        sa.Column("valid_until", sa.Date),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("provider_chosen_at", TS),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "payments_approval",
        sa.Column("funder_id", sa.String(40), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("category", sa.String(40), primary_key=True),
        sa.Column("approved_at", TS, nullable=False),
    )
    op.create_table(
        "payments_charge",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("voucher_id", sa.String(64), nullable=False, index=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("provider_reference", sa.String(100), nullable=False),
        sa.Column("service_date", sa.Date, nullable=False),
        sa.Column("units_x100", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("own_share_cents", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("accepted_at", TS, nullable=False),
        sa.Column("settlement_id", sa.String(64), index=True),
        sa.Column("fee_cents", sa.BigInteger),
        sa.Column("net_cents", sa.BigInteger),
        sa.UniqueConstraint("provider_id", "provider_reference", name="uq_payments_charge_ref"),
    )
    op.create_table(
        "payments_settlement",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False, index=True),
        sa.Column("charge_count", sa.Integer, nullable=False),
        sa.Column("gross_cents", sa.BigInteger, nullable=False),
        sa.Column("fee_cents", sa.BigInteger, nullable=False),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("fee_rate", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "payments_ledger_transaction",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "payments_ledger_entry",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(64), sa.ForeignKey("payments_ledger_transaction.id"),
                  nullable=False, index=True),
        sa.Column("account", sa.String(120), nullable=False, index=True),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for t in ("payments_ledger_entry", "payments_ledger_transaction", "payments_settlement", "payments_charge",
              "payments_approval", "payments_voucher"):
        op.drop_table(t)
    drop_messaging_tables(op)
