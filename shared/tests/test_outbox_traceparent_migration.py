"""``shared_0002`` on a database made before it: the outbox gains its ``traceparent`` column, and the rows it held
stay as they were (their traceparent NULL: the relay sends them without the header). On a new database the first migration makes the column itself
and ``shared_0002`` changes nothing (``test_migrations_match_models``)."""
from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command

from seteli_shared.db import _alembic_config, make_engine, upgrade_async


async def _columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("outbox")})
    finally:
        await engine.dispose()


async def test_shared_0002_adds_the_column_to_an_outbox_made_without_it(pg):  # noqa: ANN001
    import registry.app

    url = await pg.create("tp")
    migrations = registry.app.SPEC.migrations_dir
    await upgrade_async(migrations, url)
    assert "traceparent" in await _columns(url)
    # as a database migrated before shared_0002 existed: its outbox without the column, the shared branch at 0001
    cfg = _alembic_config(migrations, url)
    await asyncio.to_thread(command.downgrade, cfg, "shared_0001")
    assert "traceparent" not in await _columns(url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO outbox (message_id, routing_key, body, created_at, attempts) "
                                       "VALUES ('m-old', 'test.tick.v1', '{}', now(), 0)"))
    finally:
        await engine.dispose()
    await upgrade_async(migrations, url)
    assert "traceparent" in await _columns(url)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.text("SELECT message_id, traceparent FROM outbox"))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in kept] == [("m-old", None)]
