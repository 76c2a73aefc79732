"""Many rows in one statement: the consumers' set-based writes (the inbox claim, a batch handler's upserts).

``RowsInsert`` is an ``INSERT`` (optionally ``ON CONFLICT ... DO NOTHING`` or ``DO UPDATE``, ``RETURNING``) of
any number of rows. On PostgreSQL the rows go as one array per column, unnested by the statement itself
(``INSERT ... SELECT * FROM unnest($1::varchar[], ...)``): the SQL text is the same whatever the number of rows,
so the driver prepares it once per connection, where a multi-row ``VALUES`` list is a new statement (parsed and
planned again) for every batch size; and the rows cost one array element per value to encode. On SQLite (the
embedded default) it is the same ``INSERT`` executed for the list of rows. Built once per dialect, at first use.
"""
from __future__ import annotations

from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

#: ``set_`` of an ``ON CONFLICT DO UPDATE`` from the statement's ``excluded`` row and the table
UpdateFrom = Callable[[Any, sa.Table], dict[str, Any]]


def _element_type(column: sa.Column) -> sa.types.TypeEngine:
    """The array's element type: the column's, without a length (a cast to ``varchar(64)[]`` would cut a longer
    value silently, where inserting it into the column refuses it, as a row-by-row insert does)."""
    t = column.type
    t = t.impl if isinstance(t, sa.types.TypeDecorator) else t
    return sa.String() if isinstance(t, sa.String) else t


class RowsInsert:
    """``INSERT INTO table (columns)`` of many rows at once; ``conflict`` names the unique key, then ``update``
    (a function of ``excluded`` and the table giving the ``SET`` values) or, without it, ``DO NOTHING``;
    ``returning`` names columns of the rows inserted (or updated) to return."""

    def __init__(self, table: sa.Table, columns: list[str], *, conflict: list[str] | None = None,
                 update: UpdateFrom | None = None, returning: list[str] | None = None):
        self.table, self.columns = table, columns
        self.conflict, self.update, self.returning = conflict, update, returning
        self._statements: dict[str, Any] = {}

    def _finish(self, stmt: Any) -> Any:
        if self.conflict is not None:
            if self.update is None:
                stmt = stmt.on_conflict_do_nothing(index_elements=self.conflict)
            else:
                stmt = stmt.on_conflict_do_update(index_elements=self.conflict,
                                                  set_=self.update(stmt.excluded, self.table))
        if self.returning:
            stmt = stmt.returning(*[self.table.c[c] for c in self.returning])
        return stmt

    def statement(self, dialect: str) -> Any:
        found = self._statements.get(dialect)
        if found is None:
            if dialect == "postgresql":
                arrays = [sa.bindparam(c, type_=postgresql.ARRAY(_element_type(self.table.c[c])))
                          for c in self.columns]
                rows = sa.func.unnest(*arrays).table_valued(*self.columns).render_derived(name="rows")
                found = self._finish(postgresql.insert(self.table).from_select(
                    self.columns, sa.select(*[rows.c[c] for c in self.columns])))
            elif dialect == "sqlite":
                found = self._finish(sqlite.insert(self.table))
            else:  # pragma: no cover
                raise NotImplementedError(dialect)
            self._statements[dialect] = found
        return found

    async def execute(self, session: AsyncSession, rows: list[dict[str, Any]]) -> sa.Result | None:
        """Insert ``rows`` (dicts holding every one of ``columns``) in the session's transaction; None for none."""
        if not rows:
            return None
        dialect = session.bind.dialect.name
        stmt = self.statement(dialect)
        if dialect == "postgresql":
            return await session.execute(stmt, {c: [r[c] for r in rows] for c in self.columns})
        return await session.execute(stmt, [{c: r[c] for c in self.columns} for r in rows])
