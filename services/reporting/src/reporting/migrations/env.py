"""Alembic environment: the shared runner applies this service's versions on its own database; the
service's models are the target metadata (autogenerate, and the test that migrations match models)."""
from seteli_shared.db import run_alembic_env, service_metadata

from reporting import models

run_alembic_env(service_metadata(models))
