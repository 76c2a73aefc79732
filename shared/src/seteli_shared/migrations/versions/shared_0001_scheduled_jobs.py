"""scheduled jobs: each job's lease and latest run (``seteli_shared.jobs``)

Revision ID: shared_0001
"""
from alembic import op

from seteli_shared.jobs import create_jobs_table

revision = "shared_0001"
down_revision = None
branch_labels = ("seteli_shared",)
depends_on = None


def upgrade() -> None:
    create_jobs_table(op)


def downgrade() -> None:
    op.drop_table("scheduled_job")
