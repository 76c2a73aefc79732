"""A batch of one on PostgreSQL in two statements and no transaction around them (``POST /charges``): the
engine's store for a single charge, the rules ``engine.decide``'s as for every batch.

1. ``load`` reads everything at once, without a lock: the voucher's row with its row version (``xmin``),
   the units and money charged per service date, an earlier charge with the reference, the approval, the
   price lists, the choices and the funder's charging deadline;
2. ``add`` inserts the charge's rows (``rows.ChargeRows``) in one statement whose first part takes the
   voucher's write lock only if the row is still the version read (``UPDATE ... WHERE xmin = ...``), every
   insert drawing from it: if anything changed the voucher meanwhile (a charge of it, an event of its
   projection), nothing is written (``Stale``) and the charge is read and decided again.

One statement is one transaction: nothing of a charge is ever half written. A concurrent twin of the
reference fails on its unique key, and the next attempt answers it as a retry. A voucher charged by many at
once falls back, after ``OPTIMISTIC_ATTEMPTS``, to the lock taken first (``store.run_batch``). A pooled
connection found dead is thrown away and the charge tried again (the reference makes that safe)."""
from __future__ import annotations

from datetime import date, timedelta

from asyncpg import UniqueViolationError
from sqlalchemy.ext.asyncio import AsyncEngine

from seteli_shared import codes
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.db import driver_connection
from seteli_shared.outbox import wake_relays
from seteli_shared import periods
from seteli_shared.periods import MONTH
from seteli_shared.uow import AbstractUnitOfWork

from ..models import VoucherView
from . import engine, lifecycle
from .rows import ChargeRows
from .store import approval_of, price_list_of, utc, voucher_on_file

#: tries of the two statements before the lock-first transaction
OPTIMISTIC_ATTEMPTS = 3


class Stale(Exception):
    """The voucher changed between a charge's read and its write: read and decide again."""


_VOUCHER_COLUMNS = tuple(c.name for c in VoucherView.__table__.c)
#: ``load``'s one statement: the voucher's row and version, its charges per service date, the earlier charge
#: with the reference, and one row per (approval, price list, choice) combination, deduplicated in ``load``.
#: The charges are summed only over the days the rules count (``engine.days_asked``, as the batch store reads
#: them): for monthly units the service date's month and the month before it, else the whole validity; a
#: voucher's older months are not read again at every charge
_READ_ALL = f"""
SELECT {", ".join(f"v.{c}" for c in _VOUCHER_COLUMNS)}, v.xmin::text AS row_version,
  e.id AS earlier_id, e.voucher_id AS earlier_voucher_id, e.service_date AS earlier_service_date,
  e.units_x100 AS earlier_units_x100, e.tariff AS earlier_tariff, e.unit_price_cents AS earlier_unit_price_cents,
  d.days, d.day_units, d.day_money,
  a.approval_id, a.approved_at, a.status, a.not_in_force_from, a.status_changed_at, a.status_reason,
  a.provider_id AS approval_provider_id, a.category AS approval_category,
  p.price_list_id, p.effective_from, p.published_at, p.unit_price_cents, p.tariffs, p.category AS price_category,
  ch.provider_id AS choice_provider_id, ch.effective_from AS choice_effective_from, ch.chosen_at AS choice_chosen_at,
  f.charge_deadline_days
FROM (SELECT 1) one
LEFT JOIN payments_voucher v ON v.voucher_id = $1
LEFT JOIN payments_charge e ON e.provider_id = $2 AND e.provider_reference = $3
LEFT JOIN LATERAL (
  SELECT array_agg(s.service_date) AS days, array_agg(s.u) AS day_units, array_agg(s.m) AS day_money
  FROM (SELECT c.service_date, sum(c.units_x100 - c.corrected_units_x100) AS u,
               sum(c.amount_cents - c.corrected_amount_cents) AS m FROM payments_charge c
        WHERE c.voucher_id = $1 AND c.status <> 'cancelled'
          AND (v.period IS DISTINCT FROM '{MONTH}' OR c.service_date BETWEEN $6::date AND $7::date)
        GROUP BY c.service_date) s) d ON true
LEFT JOIN payments_approval a ON a.funder_id = v.funder_id AND a.provider_id = $2
  AND a.category = coalesce($4::varchar, v.category)
LEFT JOIN payments_price_list p ON p.provider_id = $2 AND p.funder_id = v.funder_id
  AND p.category = coalesce($4::varchar, v.category) AND p.effective_from <= $5::date
LEFT JOIN payments_provider_choice ch ON ch.voucher_id = v.voucher_id
LEFT JOIN payments_funder f ON f.funder_id = v.funder_id
"""
#: a voucher by its code, and whether this provider was ever chosen for it (``store.SessionChargeStore._codes``)
_BY_CODE = """
SELECT v.voucher_id, v.provider_id = $2 OR EXISTS (
  SELECT 1 FROM payments_provider_choice ch WHERE ch.voucher_id = v.voucher_id AND ch.provider_id = $2) AS mine
FROM payments_voucher v WHERE v.voucher_code = $1 LIMIT 2
"""


def _months_counted(day: date) -> tuple[date, date]:
    """The first day of the month before ``day``'s and the last day of ``day``'s: every day a monthly voucher's
    rules count for a charge on ``day`` (``engine.days_asked``: its period and the one before it)."""
    start, end = periods.period_bounds(MONTH, day, day, day)
    return periods.period_bounds(MONTH, day, day, start - timedelta(days=1))[0], end


class _Record:
    """A driver's row read by attribute, as the store's conversions read SQLAlchemy's rows."""

    __slots__ = ("_r",)

    def __init__(self, record):  # noqa: ANN001
        self._r = record

    def __getattr__(self, name: str):  # noqa: ANN204
        return self._r[name]


class OptimisticChargeStore:
    """``engine.ChargeStore`` for a batch of one line, on an asyncpg connection outside a transaction."""

    def __init__(self, conn):  # noqa: ANN001
        self.conn = conn
        self.voucher_id: str | None = None
        self.version: str | None = None

    async def load(self, provider_id: str, lines: list[engine.Line]) -> engine.ChargeState:
        [line] = lines
        state = engine.ChargeState()
        voucher_id = line.voucher_id if line.voucher_id is not None else await self._by_code(provider_id, line)
        if voucher_id is None:
            return state
        state.voucher_of[line.index] = self.voucher_id = voucher_id
        req = line.req
        rows = await self.conn.fetch(_READ_ALL, voucher_id, provider_id, line.provider_reference, req.category,
                                     req.service_date, *_months_counted(req.service_date))
        first = rows[0]
        if first["voucher_id"] is not None:
            self.version = first["row_version"]
            # the row read by name as the dictionary of its voucher columns was (the same look-ups, no copy)
            state.vouchers[voucher_id] = voucher_on_file(_Record(first))
        if first["earlier_id"] is not None:
            state.earlier[line.provider_reference] = engine.Earlier(
                first["earlier_id"], first["earlier_voucher_id"], first["earlier_service_date"],
                first["earlier_units_x100"], first["earlier_tariff"], first["earlier_unit_price_cents"])
        for day, units, money in zip(first["days"] or (), first["day_units"] or (), first["day_money"] or ()):
            state.used.add_day(voucher_id, day, int(units), int(money))
        self._projections(state, voucher_id, rows)
        return state

    async def _by_code(self, provider_id: str, line: engine.Line) -> str | None:
        canonical = codes.normalise(line.voucher_code)
        if canonical is None:
            return None
        found = await self.conn.fetch(_BY_CODE, canonical, provider_id)
        return found[0]["voucher_id"] if len(found) == 1 and found[0]["mine"] else None

    @staticmethod
    def _projections(state: engine.ChargeState, voucher_id: str, rows: list) -> None:
        """The approval, price lists, choices and deadline among the rows (one per combination)."""
        first = rows[0]
        funder = first["funder_id"]
        if funder is None:
            return
        state.deadlines[funder] = first["charge_deadline_days"]
        if first["approval_provider_id"] is not None:
            state.approvals[(funder, first["approval_category"])] = approval_of(_Record(first))
        lists, choices = {}, {}
        for r in rows:
            if r["price_list_id"] is not None:
                lists[r["price_list_id"]] = (r["price_category"], price_list_of(_Record(r)))
            if r["choice_provider_id"] is not None:
                at = utc(r["choice_chosen_at"])
                choices[(r["choice_provider_id"], at)] = lifecycle.Choice(r["choice_provider_id"],
                                                                          r["choice_effective_from"], at)
        for category, price_list in lists.values():
            state.price_lists.setdefault((funder, category), []).append(price_list)
        if choices:
            state.choices[voucher_id] = list(choices.values())

    async def add(self, principal: Principal, charges: list[engine.NewCharge]) -> None:
        if self.version is None:  # no voucher, no charge: the rules refuse before this
            raise Stale()
        tables = ChargeRows(principal, charges).tables()
        shape = tuple((table.name, columns, len(records)) for table, columns, records in tables)
        sql = _CHECKED_INSERTS.get(shape)
        if sql is None:
            sql = _checked_insert_sql(tables)
            if len(_CHECKED_INSERTS) < 64:
                _CHECKED_INSERTS[shape] = sql
        args = [self.voucher_id, self.version]
        for _table, _columns, records in tables:
            for record in records:
                args += record
        if await self.conn.fetchval(sql, *args) != 1:
            raise Stale()
        wake_relays()  # committed by the statement itself: no session to wake them on its commit


_CHECKED_INSERTS: dict[tuple, str] = {}


def _checked_insert_sql(tables: list[tuple]) -> str:
    """One statement: the voucher's write lock if its row is still version $2 (``lk``), and every table's rows
    inserted from it (none when it is not); answers 1 when written, 0 when the voucher changed."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    dialect = asyncpg_dialect()
    quote = dialect.identifier_preparer.quote
    parts = ["lk AS (UPDATE payments_voucher SET version = version + 1 WHERE voucher_id = $1 AND xmin::text = $2 "
             "RETURNING 1)"]
    n = 3
    for t, (table, columns, records) in enumerate(tables):
        selects = []
        for _record in records:
            casts = []
            for k in columns:
                casts.append(f"${n}::{table.c[k].type.compile(dialect=dialect)}")
                n += 1
            selects.append(f"SELECT {', '.join(casts)} FROM lk")
        parts.append(f"i{t} AS (INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in columns)}) "
                     f"{' UNION ALL '.join(selects)})")
    return "WITH " + ",\n".join(parts) + "\nSELECT count(*) FROM lk"


class OptimisticUnitOfWork(AbstractUnitOfWork):
    """A pooled connection's driver connection, no transaction: ``add``'s one statement is the transaction."""

    def __init__(self, db: AsyncEngine):
        self.db = db

    async def _begin(self) -> None:
        self._connection = driver_connection(self.db)
        self.charges = OptimisticChargeStore(await self._connection.__aenter__())

    async def _end(self, exc: BaseException | None) -> None:
        # the driver connection sees what ended the block: a connection found dead is thrown away
        await self._connection.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    async def _commit(self) -> None:
        """Nothing to commit: the insert committed itself."""

    async def rollback(self) -> None:
        """Nothing to roll back: a statement that failed wrote nothing."""


RETRY = (Stale, ConnectionError, UniqueViolationError)


async def charge_one(db: AsyncEngine, clock: Clock, principal: Principal,
                     line: engine.Line) -> engine.Outcome | None:
    """The line through ``engine.charge_lines`` on the fast path, up to ``OPTIMISTIC_ATTEMPTS`` times; None
    when every attempt met a change of its voucher (the caller then takes the lock first)."""
    for _attempt in range(OPTIMISTIC_ATTEMPTS):
        try:
            outcomes = await engine.charge_lines(OptimisticUnitOfWork(db), clock, principal, line.req.provider_id,
                                                 [line])
            return outcomes[line.index]
        except RETRY:
            continue
    return None
