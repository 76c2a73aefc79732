"""Plans that do not depend on autovacuum (``seteli_shared.statistics``), on the real PostgreSQL: a statement a
connection prepared while its table was nearly empty (and analysed so) keeps scanning the whole table as it grows,
until the table is analysed again; the service's own look at its tables analyses it, and the same prepared statement then reads
by its index. Autovacuum is off for the test's table (a per-table setting), whatever the server runs with."""
from __future__ import annotations

import asyncpg

from seteli_shared.db import make_engine
from seteli_shared.statistics import TableStatistics
from seteli_shared.testing import eventually


async def plan_of(conn: asyncpg.Connection) -> str:
    return "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE facts_of('{k-17,k-99}')"))


async def test_a_grown_table_is_analysed_and_its_cached_plan_replaced(pg):  # noqa: ANN001
    url = await pg.create("stats")
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    engine = make_engine(url)
    try:
        await conn.execute("CREATE TABLE fact (key text PRIMARY KEY, value int) WITH (autovacuum_enabled = false)")
        await conn.execute("INSERT INTO fact VALUES ('k-0', 0)")
        await conn.execute("ANALYZE fact")  # as autovacuum does early in a table's life, or a first bulk load
        # after five executions PostgreSQL may keep one generic plan for a prepared statement, planned for the
        # table as it was then (as it did for the reporting fold's statements); the test makes that choice for it
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE facts_of(text[]) AS SELECT value FROM fact WHERE key = ANY($1)")
        await conn.execute("EXECUTE facts_of('{k-0}')")
        await conn.execute("INSERT INTO fact SELECT 'k-' || i, i FROM generate_series(1, 200000) AS i")

        assert "Seq Scan" in await plan_of(conn)  # the plan of the nearly empty table, still

        # (a backend reports its changes to the statistics within seconds, not at once)
        analysed = await eventually(TableStatistics(engine).analyse_stale, timeout=30, interval=0.5)

        assert analysed == ["fact"]
        plan = await plan_of(conn)
        assert "Index" in plan and "Seq Scan" not in plan, plan
        assert await TableStatistics(engine).analyse_stale() == []  # nothing changed since: nothing to do
    finally:
        await conn.close()
        await engine.dispose()
