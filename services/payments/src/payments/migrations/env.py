"""Alembic environment: the shared runner applies this service's versions on its own database."""
from seteli_shared.db import run_alembic_env

run_alembic_env()
