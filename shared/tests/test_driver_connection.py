"""``db.driver_connection`` keeps a connection used moments ago checked out, and the next use takes it without
the pool's checkout and pre-ping (``BEGIN; ; ROLLBACK``, three round trips); a connection the server cut is
not used again (found closed, or dead: ``ConnectionError``, the caller's retry) and the next use works; an older
one goes back to the pool; ``release_kept`` gives them back before the engine's dispose."""
from __future__ import annotations

import asyncio

import asyncpg

from seteli_shared import db
from seteli_shared.db import driver_connection, make_engine, release_kept


async def test_a_connection_used_moments_ago_is_used_again_without_a_ping(pg) -> None:  # noqa: ANN001
    url = await pg.create("driverconn")
    engine = make_engine(url, pool_pre_ping=True, pool_size=4)
    seen: list[str] = []
    try:
        async with driver_connection(engine) as conn:
            first_pid = conn.get_server_pid()
            conn.add_query_logger(lambda record: seen.append(record.query))
            await conn.fetchval("SELECT 1")
        for _ in range(3):
            async with driver_connection(engine) as conn:
                assert conn.get_server_pid() == first_pid
                await conn.fetchval("SELECT 2")
        await asyncio.sleep(0.05)  # (asyncpg calls query loggers soon after, not at once)
        assert seen == ["SELECT 1", "SELECT 2", "SELECT 2", "SELECT 2"]  # no BEGIN; ; ROLLBACK between them

        # the server cuts it: found dead, the caller told to try again, and the next use works
        killer = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", first_pid)
        finally:
            await killer.close()
        await asyncio.sleep(0.2)
        try:  # found closed before it is used (the usual case), or dead when used: the caller tries again
            async with driver_connection(engine) as conn:
                await conn.fetchval("SELECT 3")
        except ConnectionError:
            pass
        async with driver_connection(engine) as conn:
            assert await conn.fetchval("SELECT 4") == 4
            assert conn.get_server_pid() != first_pid

        # one left inside a transaction is never used again
        async with driver_connection(engine) as conn:
            pid = conn.get_server_pid()
            await conn.execute("BEGIN")
        async with driver_connection(engine) as conn:
            assert conn.get_server_pid() != pid and not conn.is_in_transaction()
    finally:
        await release_kept(engine)
        assert engine.sync_engine.pool.checkedout() == 0
        await engine.dispose()


async def test_an_older_connection_goes_back_to_the_pool_and_is_pinged(pg, monkeypatch) -> None:  # noqa: ANN001
    engine = make_engine(await pg.create("driverconn"), pool_pre_ping=True, pool_size=4)
    monkeypatch.setattr(db, "KEPT_IDLE_SECONDS", 0.0)
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # the pool pings a connection given back moments ago too
    seen: list[str] = []
    try:
        async with driver_connection(engine) as conn:
            conn.add_query_logger(lambda record: seen.append(record.query))
        async with driver_connection(engine) as conn:
            await conn.fetchval("SELECT 1")
        await asyncio.sleep(0.05)
        assert seen[-1] == "SELECT 1" and "BEGIN;" in seen  # checked out of the pool again: pinged first
    finally:
        await engine.dispose()  # without release_kept: the dispose closes what is kept
        assert engine.sync_engine.pool.checkedout() == 0
