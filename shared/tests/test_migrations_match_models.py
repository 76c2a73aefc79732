"""Every service's migrations, applied to a fresh database, give exactly the tables its models
declare (plus the outbox, inbox and audit log; the portal, which has none of those, only its own):
on PostgreSQL and on SQLite."""
from __future__ import annotations

import importlib
import pprint
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from seteli_shared.db import compare_type, make_engine, service_metadata, upgrade_async
from seteli_shared.manifest import BY_NAME, NAMES, WITH_DATABASE


def _differences(connection, metadata) -> list:  # noqa: ANN001
    context = MigrationContext.configure(connection, opts={"compare_type": compare_type, "compare_server_default": True,
                                                           "target_metadata": metadata})
    return compare_metadata(context, metadata)


async def _assert_matches(service: str, url: str) -> None:
    models = importlib.import_module(f"{service}.models")  # not the app: the schema needs no routes
    await upgrade_async(Path(models.__file__).parent / "migrations", url)
    metadata = service_metadata(models, messaging_tables=BY_NAME[service].kind == "service")
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_differences, metadata)
    finally:
        await engine.dispose()
    assert diffs == [], f"{service}: migrations and models differ on {engine.dialect.name}:\n" + pprint.pformat(diffs)


@pytest.mark.parametrize("service", WITH_DATABASE)
async def test_migrations_match_models_on_postgres(service, pg):
    await _assert_matches(service, await pg.create(f"mig_{service}"))


@pytest.mark.parametrize("service", WITH_DATABASE)
async def test_migrations_match_models_on_sqlite(service, tmp_path):
    await _assert_matches(service, f"sqlite+aiosqlite:///{tmp_path / (service + '.db')}")


def test_service_metadata_holds_only_that_services_tables():
    for name in NAMES:
        importlib.import_module(f"{name}.models")  # all of them in one process, as in the suite
    tables = set(service_metadata(importlib.import_module("registry.models")).tables)
    assert {"outbox", "inbox", "audit_log", "registry_provider", "registry_approval"} <= tables
    assert not {t for t in tables if t.startswith(("vouchers_", "payments_", "reporting_"))}
