"""Alembic environment: the shared runner applies the portal's versions on its own database; its models
are the target metadata (the portal has no outbox, inbox or audit log: it publishes and consumes nothing)."""
from seteli_shared.db import run_alembic_env, service_metadata

from portal import models

run_alembic_env(service_metadata(models, messaging_tables=False))
