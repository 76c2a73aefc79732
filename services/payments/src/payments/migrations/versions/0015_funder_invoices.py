"""funders' invoices: the operator's gapless invoice number series, the invoices and credit notes as issued
(number, dates, payment terms, Finnish and RF references, lines), and the funder's name for the buyer

Revision ID: 0015
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments_funder") as batch:
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
    op.create_table(
        "payments_invoice_series",
        sa.Column("series", sa.String(40), primary_key=True),
        sa.Column("next_number", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "payments_funder_invoice",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("series", sa.String(40), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("funder_id", sa.String(40), nullable=False),
        sa.Column("buyer_name", sa.String(200), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("invoice_date", sa.Date, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("payment_terms_days", sa.Integer, nullable=False),
        sa.Column("reference", sa.String(20), nullable=False),
        sa.Column("rf_reference", sa.String(25), nullable=False),
        sa.Column("total_cents", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("credits_invoice_id", sa.String(64), nullable=True),
        sa.Column("credit_reason", sa.String(40), nullable=True),
        sa.Column("credited_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("series", "number", name="uq_payments_funder_invoice_number"),
    )
    op.create_index("ix_payments_funder_invoice_month", "payments_funder_invoice", ["funder_id", "month"])


def downgrade() -> None:
    op.drop_index("ix_payments_funder_invoice_month", table_name="payments_funder_invoice")
    op.drop_table("payments_funder_invoice")
    op.drop_table("payments_invoice_series")
    with op.batch_alter_table("payments_funder") as batch:
        batch.drop_column("name")
