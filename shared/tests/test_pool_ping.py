"""The pool's pre-ping at its cost (``db._ping_when_idle``): a pooled connection given back moments ago is used
again without a round trip; one idle longer is pinged first (``BEGIN; ; ROLLBACK``); one the server cut is found
closed and replaced, so the caller sees no error."""
from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text

from seteli_shared import db
from seteli_shared.db import make_engine


_LOGGED: set[int] = set()


async def _pid_and_log(engine, seen: list[str]) -> int:  # noqa: ANN001
    """The server pid of the pooled connection a use takes (its queries logged into ``seen`` from then on)."""
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        if id(raw) not in _LOGGED:
            raw.add_query_logger(lambda record: seen.append(record.query))
            _LOGGED.add(id(raw))
        await connection.execute(text("SELECT 1"))
        return raw.get_server_pid()


async def test_a_connection_given_back_moments_ago_is_not_pinged_an_idle_one_is(pg, monkeypatch) -> None:  # noqa: ANN001
    engine = make_engine(await pg.create("poolping"), pool_size=1, max_overflow=0)
    seen: list[str] = []
    try:
        pid = await _pid_and_log(engine, seen)
        for _ in range(3):
            assert await _pid_and_log(engine, seen) == pid
        await asyncio.sleep(0.05)  # (asyncpg calls query loggers soon after, not at once)
        # each use its transaction (its prepared ``SELECT 1`` is not logged), no ping (``BEGIN; ; ROLLBACK``) before it
        assert seen == ["BEGIN;", "ROLLBACK;"] * 4, seen

        monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # every connection given back counts as idle now
        seen.clear()
        assert await _pid_and_log(engine, seen) == pid
        await asyncio.sleep(0.05)
        assert seen == ["BEGIN;", ";", "ROLLBACK;", "BEGIN;", "ROLLBACK;"], seen  # pinged before use
    finally:
        await engine.dispose()


async def test_a_connection_the_server_cut_is_replaced_without_an_error(pg) -> None:  # noqa: ANN001
    url = await pg.create("poolping")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        pid = await _pid_and_log(engine, [])
        killer = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        await asyncio.sleep(0.2)  # the driver sees its socket closed
        assert await _pid_and_log(engine, []) != pid  # a new connection, and no error for the caller
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        await engine.dispose()
