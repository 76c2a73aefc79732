"""Planner statistics kept fresh by the service itself, so that its query plans never depend on autovacuum.

PostgreSQL plans a statement from its tables' statistics. Autovacuum's analyser refreshes them as tables grow,
and each refresh also throws away the plans that connections have cached for the table (asyncpg prepares every
statement; after five executions PostgreSQL may keep one generic plan for it). Where autovacuum is off (this
project's development machines) or lags behind a bulk load, a table never analysed is planned from its size
on disk alone, and a plan cached while it was nearly empty (a sequential scan) is kept while it grows to millions
of rows: a reporting fold ran at about 200 charges/s that way until its connections were recycled, then ~1,450.

``TableStatistics`` looks every ``interval`` seconds (one query on ``pg_stat_user_tables``) for the database's
tables changed beyond autovacuum's own default threshold since their last analysis (``50 + 10 %`` of their rows)
and ``ANALYZE``s them. Where autovacuum runs and keeps up, it finds nothing to do. Several instances of a service
may run it: an ``ANALYZE`` that another has just done leaves the table below the threshold, and two at once only
wait for each other. No server setting is changed.
"""
from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .logging import get_logger

log = get_logger(__name__)

#: the tables of this database whose changes since their last analysis pass autovacuum's default threshold
_STALE = text(
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "WHERE s.schemaname = current_schema() AND s.n_mod_since_analyze > :base + :share * greatest(c.reltuples, 0) "
    "ORDER BY s.n_mod_since_analyze DESC")


class TableStatistics:
    """Analyse the tables that changed enough since their last analysis; ``run`` does it every ``interval`` s."""

    def __init__(self, engine: AsyncEngine, interval: float = 30.0, base: int = 50, share: float = 0.1):
        self.engine, self.interval, self.base, self.share = engine, interval, base, share

    async def analyse_stale(self) -> list[str]:
        """One look: ``ANALYZE`` each stale table (each in its own transaction); returns their names."""
        async with self.engine.connect() as conn:
            stale = list((await conn.execute(_STALE, {"base": self.base, "share": self.share})).scalars())
            await conn.commit()
            for table in stale:
                await conn.execute(text(f'ANALYZE "{table}"'))
                await conn.commit()
        if stale:
            log.info("db.tables_analysed", tables=stale)
        return stale

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.analyse_stale()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (the database down: the next look tries again)
                log.warning("db.analyse_failed", error=repr(exc)[:300])
