"""provider life cycle: rulebooks, the provider's register data and service units, applications,
approval status and history

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

from seteli_shared.messaging import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_rulebook",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("funder_id", sa.String(40), sa.ForeignKey("registry_funder.funder_id"), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("rulebook_version", sa.String(20), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("document_url", sa.String(500)),
        sa.Column("price_changes_need_approval", sa.Boolean, nullable=False),
        sa.Column("prepayment_check_max_age_days", sa.Integer, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("funder_id", "category", "rulebook_version", name="uq_registry_rulebook"),
    )
    with op.batch_alter_table("registry_provider") as batch:
        batch.add_column(sa.Column("contact_email", sa.String(254)))
        batch.add_column(sa.Column("contact_phone", sa.String(32)))
        batch.add_column(sa.Column("bic", sa.String(11)))
        batch.add_column(sa.Column("prepayment_registered", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("prepayment_checked_on", sa.Date))
        batch.add_column(sa.Column("liability_insurer", sa.String(200)))
        batch.add_column(sa.Column("liability_policy_number", sa.String(64)))
        batch.add_column(sa.Column("liability_valid_until", sa.Date))
        batch.add_column(sa.Column("patient_insurer", sa.String(200)))
        batch.add_column(sa.Column("patient_policy_number", sa.String(64)))
        batch.add_column(sa.Column("patient_valid_until", sa.Date))
        batch.add_column(sa.Column("supervisory_register_number", sa.String(64)))
        batch.add_column(sa.Column("languages", sa.JSON))
        batch.add_column(sa.Column("municipalities", sa.JSON))
        batch.add_column(sa.Column("updated_at", UTCDateTime()))
    op.create_table(
        "registry_service_unit",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), sa.ForeignKey("registry_provider.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("street_address", sa.String(200), nullable=False),
        sa.Column("postal_code", sa.String(5), nullable=False),
        sa.Column("municipality_code", sa.String(3), nullable=False),
    )
    op.create_index("ix_registry_service_unit_provider_id", "registry_service_unit", ["provider_id"])
    op.create_table(
        "registry_application",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), sa.ForeignKey("registry_provider.id"), nullable=False),
        sa.Column("funder_id", sa.String(40), sa.ForeignKey("registry_funder.funder_id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("rulebook_versions", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("submitted_at", UTCDateTime()),
        sa.Column("decided_at", UTCDateTime()),
        sa.Column("reason", sa.String(64)),
        sa.Column("message", sa.String(2000)),
    )
    op.create_index("ix_registry_application_provider_id", "registry_application", ["provider_id"])
    op.create_index("ix_registry_application_funder_id", "registry_application", ["funder_id"])
    with op.batch_alter_table("registry_approval") as batch:
        batch.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="active"))
        batch.add_column(sa.Column("application_id", sa.String(64)))
        batch.add_column(sa.Column("rulebook_version", sa.String(20)))
        batch.add_column(sa.Column("status_reason", sa.String(64)))
        batch.add_column(sa.Column("status_effective_from", sa.Date))
        batch.add_column(sa.Column("status_changed_at", UTCDateTime()))
    op.create_table(
        "registry_approval_change",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(64), sa.ForeignKey("registry_approval.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("message", sa.String(2000)),
        sa.Column("effective_from", sa.Date),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("approval_id", "position", name="uq_registry_approval_change"),
    )
    op.create_index("ix_registry_approval_change_approval_id", "registry_approval_change", ["approval_id"])


def downgrade() -> None:
    op.drop_index("ix_registry_approval_change_approval_id", "registry_approval_change")
    op.drop_table("registry_approval_change")
    with op.batch_alter_table("registry_approval") as batch:
        for column in ("status_changed_at", "status_effective_from", "status_reason", "rulebook_version",
                       "application_id", "status"):
            batch.drop_column(column)
    op.drop_index("ix_registry_application_funder_id", "registry_application")
    op.drop_index("ix_registry_application_provider_id", "registry_application")
    op.drop_table("registry_application")
    op.drop_index("ix_registry_service_unit_provider_id", "registry_service_unit")
    op.drop_table("registry_service_unit")
    with op.batch_alter_table("registry_provider") as batch:
        for column in ("updated_at", "municipalities", "languages", "supervisory_register_number",
                       "patient_valid_until", "patient_policy_number", "patient_insurer", "liability_valid_until",
                       "liability_policy_number", "liability_insurer", "prepayment_checked_on",
                       "prepayment_registered", "bic", "contact_phone", "contact_email"):
            batch.drop_column(column)
    op.drop_table("registry_rulebook")
