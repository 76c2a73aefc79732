"""the bank side of the ledger: payouts executed by the bank, funders' payments received, recovery claims
for corrections no settlement could offset (and their repayments)

Revision ID: 0012
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_settlement_run") as batch:
        batch.add_column(sa.Column("executed_on", sa.Date()))
        batch.add_column(sa.Column("executed_at", UTCDateTime()))
    with op.batch_alter_table("payments_charge_correction") as batch:
        batch.add_column(sa.Column("recovery_claim_id", sa.String(64)))
    op.create_index("ix_payments_charge_correction_recovery_claim_id", "payments_charge_correction",
                    ["recovery_claim_id"])
    op.create_table(
        "payments_recovery_claim",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False, index=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("correction_count", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("fee_cents", sa.BigInteger(), nullable=False),
        sa.Column("net_cents", sa.BigInteger(), nullable=False),
        sa.Column("repaid_cents", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reference", sa.String(25), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_payments_recovery_claim_funder", "payments_recovery_claim", ["funder_id", "created_at"])
    op.create_table(
        "payments_bank_transaction",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("bank_reference", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("booked_on", sa.Date(), nullable=False),
        sa.Column("funder_id", sa.String(40), index=True),
        sa.Column("provider_id", sa.String(64)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("claim_id", sa.String(64), index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("kind", "bank_reference", name="uq_payments_bank_transaction_reference"),
    )


def downgrade() -> None:
    op.drop_table("payments_bank_transaction")
    op.drop_index("ix_payments_recovery_claim_funder", table_name="payments_recovery_claim")
    op.drop_table("payments_recovery_claim")
    op.drop_index("ix_payments_charge_correction_recovery_claim_id", table_name="payments_charge_correction")
    with op.batch_alter_table("payments_charge_correction") as batch:
        batch.drop_column("recovery_claim_id")
    with op.batch_alter_table("payments_settlement_run") as batch:
        batch.drop_column("executed_at")
        batch.drop_column("executed_on")
