"""job progress: each long job's kind, counts and outcome while it runs and after (``seteli_shared.progress``)

Revision ID: shared_0003
"""
from alembic import op

from seteli_shared.progress import create_progress_table

revision = "shared_0003"
down_revision = "shared_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_progress_table(op)


def downgrade() -> None:
    op.drop_table("job_progress")
