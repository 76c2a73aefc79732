"""Every service's migrations apply on PostgreSQL and SQLite, and the audit trail is append-only."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from seteli_shared.db import make_engine, upgrade_async
from seteli_shared.manifest import NAMES as SERVICES


def migrations_of(service: str):  # noqa: ANN201
    import importlib

    return importlib.import_module(f"{service}.app").SPEC.migrations_dir


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_apply_and_the_audit_trail_refuses_change(service, backend, pg, tmp_path):  # noqa: ANN001
    url = await pg.create(service) if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    await upgrade_async(migrations_of(service), url)
    await upgrade_async(migrations_of(service), url)  # applying again is a no-op
    engine = make_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(sa.text(
                "INSERT INTO audit_log (at, channel, actor, roles, actor_tenant, action, resource_type) "
                "VALUES (CURRENT_TIMESTAMP, 'http', 'a', 'operator', 'operator', 'x', 'y')"))
        for stmt in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                async with engine.begin() as c:
                    await c.execute(sa.text(stmt))
        async with engine.connect() as c:
            assert (await c.execute(sa.text("SELECT actor FROM audit_log"))).scalars().all() == ["a"]
    finally:
        await engine.dispose()
