"""Payments use cases: each one transaction that changes state, posts to the ledger, records its
audit entry and its events in the outbox together; and the tenant-scoped reads. Time comes from the
``Clock`` passed in."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from itertools import groupby

from asyncpg import UniqueViolationError
from sqlalchemy import Date, Table, and_, bindparam, case, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit, periods
from seteli_shared.auth import Principal, TenantScope
from seteli_shared.clock import Clock
from seteli_shared.db import (WHOLE_RUN_STATEMENT_SECONDS, RawStatement, driver_connection, driver_transaction,
                              once_more_on_conflict, unit_of_work)
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import ChargeAccepted, ChargeSettled, SettlementCreated
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import T as OUTBOX
from seteli_shared.outbox import add_event, add_events, event_row, wake_relay_on_commit, wake_relays
from seteli_shared.schemas import PageParams, paginate

from . import domain, lifecycle
from .models import (ApprovalView, BankTransaction, Charge, ChargeCorrection, FunderView, LedgerEntry,
                     LedgerTransaction, Payout, PriceListView, ProviderChoiceView, RecoveryClaim, Settlement,
                     SettlementRun, VoucherView)
from .settlement import bank_texts

SOURCE = "payments"
#: a charge its provider cancelled before settlement (``intake.cancel_charge``): its units and money no longer count
CANCELLED = "cancelled"
Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)


async def post(session: AsyncSession, kind: str, reference: str, postings: list[tuple[str, int]],
               at: datetime) -> None:
    txn_id = new_id()
    session.add(LedgerTransaction(id=txn_id, kind=kind, reference=reference, created_at=at))
    await session.flush()
    await session.execute(LedgerEntry.__table__.insert(), [
        {"transaction_id": txn_id, "account": account, "amount_cents": amount} for account, amount in postings])


def _terms(view: VoucherView | None) -> domain.VoucherTerms | None:
    if view is None or not view.issued:
        return None
    return domain.VoucherTerms(view.funder_id, view.category, view.units_per_period_x100, view.period,
                               view.value_per_unit_cents, view.valid_from, view.valid_until, view.provider_id,
                               **_kind_terms(view))


def _kind_terms(view: VoucherView) -> dict:
    """The voucher's kind and its kind's terms, as the charging rules take them."""
    return {"kind": view.kind or domain.SERVICE_VOUCHER, "budget_cents": view.budget_cents,
            "categories": tuple(view.categories or ()), "max_value_per_unit_cents": view.max_value_per_unit_cents,
            "client_fee_cents": view.client_fee_cents}


async def charge_voucher(sessions: Sessions, clock: Clock, principal: Principal, voucher_id: str,
                        provider_reference: str, req: domain.ChargeRequest) -> tuple[Charge, bool]:
    """A provider charges a voucher: the charge and whether it is new (a retry answers the first)."""
    engine = sessions.kw.get("bind")
    if engine is not None and engine.dialect.name == "postgresql":
        charge, new = await _charge_on_driver(engine, clock, principal, voucher_id, provider_reference, req)
    else:
        async def accept() -> tuple[Charge, bool]:
            async with unit_of_work(sessions) as session:
                # the audit row goes in with the charge's own rows (one statement on PostgreSQL)
                return await accept_charge(session, clock, voucher_id, provider_reference, req, audit_as=principal)

        try:
            charge, new = await once_more_on_conflict(accept)
        except DBAPIError as exc:
            if not exc.connection_invalidated:  # the pool does not ping: a connection the server dropped
                raise  # shows here; the unit of work rolled back, and the reference makes the retry safe
            charge, new = await once_more_on_conflict(accept)
    if new:
        log.info("charge.accepted", charge_id=charge.id, voucher_id=charge.voucher_id, amount_cents=charge.amount_cents)
    return charge, new


#: tries of the two-statement charge before the lock-first transaction (``_charge_on_driver``)
OPTIMISTIC_ATTEMPTS = 3


async def _charge_on_driver(engine, clock: Clock, principal: Principal, voucher_id: str,  # noqa: ANN001
                            provider_reference: str, req: domain.ChargeRequest) -> tuple[Charge, bool]:
    """``accept_charge`` on PostgreSQL through the pooled connection's asyncpg connection itself, the
    same rules in the same order, in two statements and no transaction around them:

    1. ``_OptimisticDb.lock`` (a read, no lock yet): the voucher with its row version (``xmin``), the units
       and money charged per service date, an earlier charge with the reference, the approval, price lists,
       choices and the funder's charging deadline;
    2. the rows of a new charge inserted by one statement whose first part takes the voucher's write
       lock only if the row is still the version read (``UPDATE ... WHERE xmin = ...``), every insert
       drawing from it: if anything changed the voucher meanwhile (a charge of it, an event of its
       projection), nothing is written and the charge is read and decided again.

    One statement is one transaction: nothing of a charge is ever half written. A concurrent twin of
    the reference fails on its unique key, and the next attempt answers it as a retry. A voucher
    charged by many at once falls back, after a few attempts, to the lock taken first
    (``driver_transaction``). A pooled connection found dead is thrown away and the charge tried again
    (the reference makes that safe)."""
    for attempt in range(OPTIMISTIC_ATTEMPTS + 3):
        try:
            if attempt < OPTIMISTIC_ATTEMPTS:
                async with driver_connection(engine) as conn:
                    db = _OptimisticDb(conn, voucher_id, provider_reference, req)
                    charge, new = await _accept(db, clock, voucher_id, provider_reference, req, principal)
            else:
                async with driver_transaction(engine) as conn:
                    charge, new = await _accept(_DriverDb(conn), clock, voucher_id, provider_reference, req,
                                                principal)
            if new:
                wake_relays()
            return charge, new
        except (_Stale, ConnectionError, UniqueViolationError):
            if attempt == OPTIMISTIC_ATTEMPTS + 2:
                raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ the charge's statements, built once
# A charge costs three statements and the commit: (1) lock the voucher and read it (UPDATE ... RETURNING);
# (2) once the lock is held (a new statement, hence a snapshot that sees every charge committed before
# it), read the period's sums, an earlier charge with the reference, the approval, the price lists and
# the provider choices together; (3) insert the charge, its ledger transaction and entries, the outbox
# row and the audit row (on PostgreSQL one statement of data-modifying CTEs, elsewhere one each).
_V = VoucherView.__table__
_C = Charge.__table__
_A = ApprovalView.__table__
_P = PriceListView.__table__
_CH = ProviderChoiceView.__table__
_F = FunderView.__table__
_LOCK_VOUCHER = (update(_V).where(_V.c.voucher_id == bindparam("vid")).values(version=_V.c.version + 1)
                 .returning(*_V.c))


def _period_sum(column, start: str, end: str):  # noqa: ANN001, ANN202
    inside = and_(_C.c.service_date >= bindparam(start, type_=Date), _C.c.service_date <= bindparam(end, type_=Date))
    return func.coalesce(func.sum(case((inside, column), else_=0)), 0)


# (what corrections after settlement removed from a charge is the voucher's again)
_UNITS, _MONEY = _C.c.units_x100 - _C.c.corrected_units_x100, _C.c.amount_cents - _C.c.corrected_amount_cents
_SUMS = (select(_period_sum(_UNITS, "start", "end").label("used"),
                _period_sum(_MONEY, "start", "end").label("money_used"),
                _period_sum(_UNITS, "prev_start", "prev_end").label("previous_used"))
         .where(_C.c.voucher_id == bindparam("vid"), _C.c.status != CANCELLED).subquery("sums"))
_EARLIER = (select(_C.c.id).where(_C.c.provider_id == bindparam("pid"),
                                  _C.c.provider_reference == bindparam("ref")).scalar_subquery())
_CONTEXT = (
    select(_EARLIER.label("earlier_id"), _SUMS.c.used, _SUMS.c.money_used, _SUMS.c.previous_used,
           _A.c.approval_id, _A.c.approved_at, _A.c.status, _A.c.not_in_force_from, _A.c.status_changed_at,
           _A.c.status_reason, _A.c.provider_id.label("approval_provider_id"),
           _P.c.price_list_id, _P.c.effective_from, _P.c.published_at, _P.c.unit_price_cents, _P.c.tariffs,
           _CH.c.provider_id.label("choice_provider_id"), _CH.c.effective_from.label("choice_effective_from"),
           _CH.c.chosen_at.label("choice_chosen_at"), _F.c.charge_deadline_days)
    .select_from(_SUMS
                 .outerjoin(_A, and_(_A.c.funder_id == bindparam("fid"), _A.c.provider_id == bindparam("pid"),
                                     _A.c.category == bindparam("cat")))
                 .outerjoin(_P, and_(_P.c.provider_id == bindparam("pid"), _P.c.funder_id == bindparam("fid"),
                                     _P.c.category == bindparam("cat"),
                                     _P.c.effective_from <= bindparam("day", type_=Date)))
                 .outerjoin(_CH, _CH.c.voucher_id == bindparam("vid"))
                 .outerjoin(_F, _F.c.funder_id == bindparam("fid")))
)
_EARLIER_CHARGE = select(Charge).where(Charge.provider_id == bindparam("pid"),
                                       Charge.provider_reference == bindparam("ref"))
_NO_DAY = date(1, 1, 1)
_RAW_LOCK, _RAW_CONTEXT, _RAW_EARLIER = (RawStatement(s) for s in (_LOCK_VOUCHER, _CONTEXT, _EARLIER_CHARGE))


@dataclass
class _Context:
    """What statement (2) read: one row per (price list, provider choice), deduplicated here."""

    earlier_id: str | None
    used: int
    money_used: int
    previous_used: int
    approval: domain.ApprovalState | None
    price_lists: list[domain.PriceList]
    choices: list[lifecycle.Choice]
    charge_deadline_days: int | None = None


def _utc(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at


async def _read_context(db: "_SessionDb | _DriverDb", voucher_id: str, provider_reference: str,
                        req: domain.ChargeRequest, terms: domain.VoucherTerms | None, category: str | None) -> _Context:
    if terms is not None:
        start, end = domain.period_bounds(terms, req.service_date)
        previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, req.service_date)
    else:
        start, end, previous = _NO_DAY, _NO_DAY, None
    prev_start, prev_end = previous or (_NO_DAY, _NO_DAY)
    rows = await db.context({
        "vid": voucher_id, "pid": req.provider_id, "ref": provider_reference, "start": start, "end": end,
        "prev_start": prev_start, "prev_end": prev_end, "fid": terms.funder_id if terms else "",
        "cat": category or "", "day": req.service_date})
    first = rows[0]
    approval = None if first.approval_provider_id is None else domain.ApprovalState(
        approval_id=first.approval_id, approved_at=_utc(first.approved_at), status=first.status,
        not_in_force_from=first.not_in_force_from, changed_at=_utc(first.status_changed_at),
        reason=first.status_reason)
    lists = {r.price_list_id: domain.PriceList(
        price_list_id=r.price_list_id, effective_from=r.effective_from, published_at=_utc(r.published_at),
        unit_price_cents=r.unit_price_cents, tariffs={k: int(v) for k, v in (r.tariffs or {}).items()})
        for r in rows if r.price_list_id is not None}
    choices = {(r.choice_provider_id, _utc(r.choice_chosen_at)): lifecycle.Choice(
        r.choice_provider_id, r.choice_effective_from, _utc(r.choice_chosen_at))
        for r in rows if r.choice_provider_id is not None}
    return _Context(first.earlier_id, int(first.used), int(first.money_used), int(first.previous_used), approval,
                    list(lists.values()), list(choices.values()), first.charge_deadline_days)


def _life_cycle_terms(view: VoucherView, terms: domain.VoucherTerms, req: domain.ChargeRequest, today: date,
                      choices: list[lifecycle.Choice], previous_used_x100: int) -> domain.VoucherTerms:
    """The voucher's terms for this charge after its life cycle: refused after a revocation (beyond the
    grace) or from a provider switched away from by the service date; the provider the service date
    belongs to as the chosen one; the period's units with what the previous month carried over."""
    lifecycle.check_revocation(view.revoked_at, view.revoked_from, req.service_date, today)
    lifecycle.check_chosen_on(choices, req.provider_id, req.service_date)
    provider = lifecycle.provider_on(choices, req.service_date) or terms.provider_id
    previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, req.service_date)
    carried = 0
    if view.carry_over and previous is not None and terms.units_per_period_x100 is not None:
        carried = periods.carried_in_x100(terms.units_per_period_x100, True, previous_used_x100)
    if provider == terms.provider_id and not carried:
        return terms  # nothing to change (the terms are frozen: the same object serves)
    return replace(terms, provider_id=provider, units_per_period_x100=(
        None if terms.units_per_period_x100 is None else terms.units_per_period_x100 + carried))


def _together(batches: list[tuple[Table, list[dict]]]) -> tuple[tuple, object]:
    """The one PostgreSQL statement inserting every batch's rows (the first batches as data-modifying
    CTEs of the last one's insert; foreign keys are checked at the statement's end), built once per
    shape (a charge's rows always have the same): compiled once, cached. Returns (shape, statement)."""
    shape = tuple((table.name, tuple(tuple(row) for row in rows)) for table, rows in batches)
    stmt = _TOGETHER.get(shape)
    if stmt is None:
        built = [(table, [{k: bindparam(f"b{n}_{i}_{k}", type_=table.c[k].type) for k in row}
                          for i, row in enumerate(rows)]) for n, (table, rows) in enumerate(batches)]
        *before, (last_table, last_rows) = built
        stmt = insert(last_table).values(last_rows)
        for n, (table, rows) in enumerate(before):
            stmt = stmt.add_cte(insert(table).values(rows).cte(f"ins{n}"))
        if len(_TOGETHER) < 64:
            _TOGETHER[shape] = stmt
    return shape, stmt


def _together_params(batches: list[tuple[Table, list[dict]]]) -> dict:
    return {f"b{n}_{i}_{k}": v for n, (_t, rows) in enumerate(batches) for i, row in enumerate(rows)
            for k, v in row.items()}


_TOGETHER: dict[tuple, object] = {}


class _SessionDb:
    """A charge's statements through the session (SQLite, and ``accept_charge`` in a caller's transaction)."""

    def __init__(self, session: AsyncSession):
        self.session = session

    async def lock(self, voucher_id: str):  # noqa: ANN201
        return (await self.session.execute(_LOCK_VOUCHER, {"vid": voucher_id})).first()

    async def context(self, params: dict) -> list:
        return (await self.session.execute(_CONTEXT, params)).all()

    async def earlier(self, provider_id: str, reference: str) -> Charge:
        return (await self.session.execute(_EARLIER_CHARGE, {"pid": provider_id, "ref": reference})).scalar_one()

    async def insert_together(self, batches: list[tuple[Table, list[dict]]]) -> None:
        """On PostgreSQL in one statement, elsewhere one statement per table."""
        if self.session.bind.dialect.name != "postgresql":
            for table, rows in batches:
                await self.session.execute(table.insert(), rows)
            return
        await self.session.execute(_together(batches)[1], _together_params(batches))


class _Row(dict):
    """A driver's row read by attribute, as SQLAlchemy's rows are."""

    __slots__ = ()

    def __getattr__(self, name: str):  # noqa: ANN204
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _DriverDb:
    """The same statements on the asyncpg connection itself (PostgreSQL), compiled once."""

    def __init__(self, conn):  # noqa: ANN001
        self.conn = conn

    async def lock(self, voucher_id: str) -> _Row | None:
        record = await self.conn.fetchrow(_RAW_LOCK.sql, *_RAW_LOCK.args({"vid": voucher_id}))
        return None if record is None else _Row(record.items())

    async def context(self, params: dict) -> list[_Row]:
        return [_Row(r.items()) for r in await self.conn.fetch(_RAW_CONTEXT.sql, *_RAW_CONTEXT.args(params))]

    async def earlier(self, provider_id: str, reference: str) -> Charge:
        record = await self.conn.fetchrow(_RAW_EARLIER.sql, *_RAW_EARLIER.args({"pid": provider_id, "ref": reference}))
        return Charge(**dict(record.items()))

    async def insert_together(self, batches: list[tuple[Table, list[dict]]]) -> None:
        shape, stmt = _together(batches)
        raw = _RAW_TOGETHER.get(shape)
        if raw is None:
            raw = RawStatement(stmt)
            if len(_RAW_TOGETHER) < 64:
                _RAW_TOGETHER[shape] = raw
        await self.conn.execute(raw.sql, *raw.args(_together_params(batches)))


_RAW_TOGETHER: dict[tuple, RawStatement] = {}


class _Stale(Exception):
    """The voucher changed between a charge's read and its write: read and decide again."""


#: what ``_OptimisticDb.read`` reads in one statement: ``_CONTEXT``'s columns, the voucher's row (the one a
#: lock would return) and its version, and per service date the units and money charged (the period's sums
#: are taken from them once the voucher's period is known)
_READ_ALL = f"""
SELECT {", ".join(f"v.{c.name}" for c in _V.c)}, v.xmin::text AS row_version,
  (SELECT c.id FROM payments_charge c WHERE c.provider_id = $2 AND c.provider_reference = $3) AS earlier_id,
  d.days, d.day_units, d.day_money,
  a.approval_id, a.approved_at, a.status, a.not_in_force_from, a.status_changed_at, a.status_reason,
  a.provider_id AS approval_provider_id,
  p.price_list_id, p.effective_from, p.published_at, p.unit_price_cents, p.tariffs,
  ch.provider_id AS choice_provider_id, ch.effective_from AS choice_effective_from, ch.chosen_at AS choice_chosen_at,
  f.charge_deadline_days
FROM (SELECT 1) one
LEFT JOIN payments_voucher v ON v.voucher_id = $1
LEFT JOIN LATERAL (
  SELECT array_agg(s.service_date) AS days, array_agg(s.u) AS day_units, array_agg(s.m) AS day_money
  FROM (SELECT c.service_date, sum(c.units_x100 - c.corrected_units_x100) AS u,
               sum(c.amount_cents - c.corrected_amount_cents) AS m FROM payments_charge c
        WHERE c.voucher_id = $1 AND c.status <> '{CANCELLED}' GROUP BY c.service_date) s) d ON true
LEFT JOIN payments_approval a ON a.funder_id = v.funder_id AND a.provider_id = $2
  AND a.category = coalesce($4::varchar, v.category)
LEFT JOIN payments_price_list p ON p.provider_id = $2 AND p.funder_id = v.funder_id
  AND p.category = coalesce($4::varchar, v.category) AND p.effective_from <= $5::date
LEFT JOIN payments_provider_choice ch ON ch.voucher_id = v.voucher_id
LEFT JOIN payments_funder f ON f.funder_id = v.funder_id
"""
_VOUCHER_COLUMNS = tuple(c.name for c in _V.c)
_CONTEXT_COLUMNS = ("approval_id", "approved_at", "status", "not_in_force_from", "status_changed_at", "status_reason",
                    "approval_provider_id", "price_list_id", "effective_from", "published_at", "unit_price_cents",
                    "tariffs", "choice_provider_id", "choice_effective_from", "choice_chosen_at",
                    "charge_deadline_days")


class _OptimisticDb(_DriverDb):
    """A charge's statements without a transaction around them (``_charge_on_driver``): ``lock`` reads
    everything at once (no lock yet), ``context`` answers from what it read, ``insert_together`` writes
    only if the voucher's row is still the version read (else ``_Stale``)."""

    def __init__(self, conn, voucher_id: str, reference: str, req: domain.ChargeRequest):  # noqa: ANN001
        super().__init__(conn)
        self.params = (voucher_id, req.provider_id, reference, req.category, req.service_date)
        self.rows: list = []
        self.version: str | None = None
        self.voucher_id = voucher_id

    async def lock(self, voucher_id: str) -> _Row | None:
        self.rows = await self.conn.fetch(_READ_ALL, *self.params)
        first = self.rows[0]
        if first["voucher_id"] is None:
            return None
        self.version = first["row_version"]
        return _Row((c, first[c]) for c in _VOUCHER_COLUMNS)

    async def context(self, params: dict) -> list[_Row]:
        first = self.rows[0]
        days = first["days"] or ()

        def period_sum(values, start: date, end: date) -> int:  # noqa: ANN001
            return sum(v for d, v in zip(days, values) if start <= d <= end) if days else 0

        sums = {"earlier_id": first["earlier_id"],
                "used": period_sum(first["day_units"], params["start"], params["end"]),
                "money_used": period_sum(first["day_money"], params["start"], params["end"]),
                "previous_used": period_sum(first["day_units"], params["prev_start"], params["prev_end"])}
        return [_Row({**sums, **{c: r[c] for c in _CONTEXT_COLUMNS}}) for r in self.rows]

    async def insert_together(self, batches: list[tuple[Table, list[dict]]]) -> None:
        if self.version is None:  # no voucher, no charge: the rules refuse before this
            raise _Stale()
        shape = tuple((table.name, tuple(tuple(row) for row in rows)) for table, rows in batches)
        sql = _CHECKED_INSERTS.get(shape)
        if sql is None:
            sql = _checked_insert_sql(batches)
            if len(_CHECKED_INSERTS) < 64:
                _CHECKED_INSERTS[shape] = sql
        args = [self.voucher_id, self.version]
        for _table, rows in batches:
            for row in rows:
                args += row.values()
        if await self.conn.fetchval(sql, *args) != 1:
            raise _Stale()


_CHECKED_INSERTS: dict[tuple, str] = {}


def _checked_insert_sql(batches: list[tuple[Table, list[dict]]]) -> str:
    """One statement: the voucher's write lock if its row is still version $2 (``lk``), and every batch's
    rows inserted from it (none when it is not); answers 1 when written, 0 when the voucher changed."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    dialect = asyncpg_dialect()
    quote = dialect.identifier_preparer.quote
    parts = ["lk AS (UPDATE payments_voucher SET version = version + 1 WHERE voucher_id = $1 AND xmin::text = $2 "
             "RETURNING 1)"]
    n = 3
    for t, (table, rows) in enumerate(batches):
        columns = list(rows[0])
        selects = []
        for row in rows:
            assert list(row) == columns
            casts = []
            for k in columns:
                casts.append(f"${n}::{table.c[k].type.compile(dialect=dialect)}")
                n += 1
            selects.append(f"SELECT {', '.join(casts)} FROM lk")
        parts.append(f"i{t} AS (INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in columns)}) "
                     f"{' UNION ALL '.join(selects)})")
    return "WITH " + ",\n".join(parts) + "\nSELECT count(*) FROM lk"


async def accept_charge(session: AsyncSession, clock: Clock, voucher_id: str, provider_reference: str,
                        req: domain.ChargeRequest, *, audit_as: Principal | None = None) -> tuple[Charge, bool]:
    """Returns the charge and whether it is new. The provider's own reference makes a retry safe.
    With ``audit_as``, a new charge's audit entry (``charge.create``) is recorded with it."""
    charge, new = await _accept(_SessionDb(session), clock, voucher_id, provider_reference, req, audit_as)
    if new:
        wake_relay_on_commit(session)
    return charge, new


async def _accept(db: "_SessionDb | _DriverDb", clock: Clock, voucher_id: str, provider_reference: str,
                  req: domain.ChargeRequest, audit_as: Principal | None) -> tuple[Charge, bool]:
    """``accept_charge`` on either way to the database (the same statements, the same rules)."""
    # take the voucher's write lock first (and read the voucher with it): concurrent charges of one
    # voucher (and twins of one request) queue up here, and each then sees what the ones before it
    # committed, since everything else is read by a later statement
    locked = await db.lock(voucher_id)
    view = locked  # the row's columns, read as a VoucherView's attributes
    terms = _terms(view)
    category = None if terms is None else domain.charge_category(terms, req.category)
    ctx = await _read_context(db, voucher_id, provider_reference, req, terms, category)
    if ctx.earlier_id is not None:
        earlier = await db.earlier(req.provider_id, provider_reference)
        same = (earlier.voucher_id, earlier.service_date, earlier.units_x100, earlier.tariff) == (
            voucher_id, req.service_date, req.units_x100, req.tariff) and req.unit_price_cents in (
            None, earlier.unit_price_cents)
        if not same:
            raise Conflict("duplicate_reference", "this provider reference was already used for another charge",
                           charge_id=earlier.id)
        return earlier, False
    if terms is not None:  # switches, revocation and carried-over units (lifecycle.py)
        terms = _life_cycle_terms(view, terms, req, clock.today(), ctx.choices, ctx.previous_used)
    amounts = domain.validate_charge(terms, ctx.approval, ctx.used, req, clock.today(), ctx.price_lists,
                                     money_used_cents=ctx.money_used, charge_deadline_days=ctx.charge_deadline_days)
    now = clock.now()
    charge = Charge(
        id=new_id(), voucher_id=voucher_id, funder_id=terms.funder_id, provider_id=req.provider_id,
        category=category, provider_reference=provider_reference, service_date=req.service_date,
        units_x100=req.units_x100, unit_price_cents=amounts.unit_price_cents, amount_cents=amounts.amount_cents,
        own_share_cents=amounts.own_share_cents, tariff=req.tariff, price_registered=amounts.price_registered,
        registered_price_cents=amounts.registered_price_cents, price_list_id=amounts.price_list_id,
        client_fee_cents=amounts.client_fee_cents, status=domain.ACCEPTED, accepted_at=now,
    )
    txn_id = new_id()
    _env, outbox_row = event_row(ChargeAccepted(
        charge_id=charge.id, voucher_id=voucher_id, funder_id=charge.funder_id, provider_id=charge.provider_id,
        category=charge.category, service_date=charge.service_date, units=from_hundredths(charge.units_x100),
        unit_price_cents=charge.unit_price_cents, amount_cents=charge.amount_cents,
        own_share_cents=charge.own_share_cents, accepted_at=now, tariff=charge.tariff,
        price_registered=charge.price_registered, registered_price_cents=charge.registered_price_cents,
        price_list_id=charge.price_list_id, client_fee_cents=charge.client_fee_cents), SOURCE)
    batches = [
        (_C, [charge.model_dump()]),
        (LedgerTransaction.__table__, [{"id": txn_id, "kind": "charge", "reference": charge.id, "created_at": now}]),
        (LedgerEntry.__table__, [{"transaction_id": txn_id, "account": account, "amount_cents": amount} for
                                 account, amount in domain.charge_postings(charge.funder_id, charge.provider_id,
                                                                           charge.amount_cents)]),
        (OUTBOX, [outbox_row]),
    ]
    if audit_as is not None:
        batches.append((audit.T, [audit.row(audit_as, "charge.create", "charge", charge.id, charge.funder_id)]))
    await db.insert_together(batches)
    return charge, True


async def settle_now(sessions: Sessions, clock: Clock, principal: Principal,
                     default_fee_rate: Decimal) -> list[Settlement]:
    """Settle all accepted charges now, each funder's at its contract's fee rate."""
    async with unit_of_work(sessions) as session:
        made = await run_settlement(session, clock, default_fee_rate)
        for s in made:
            await audit.record(session, principal, "settlement.create", "settlement", s.id, s.funder_id)
    return made


async def fee_rates(session: AsyncSession, funder_ids: set[str]) -> dict[str, str]:
    """The funders' fee rates as payments knows them from ``FunderRegistered``."""
    if not funder_ids:
        return {}
    rows = await session.execute(select(FunderView.funder_id, FunderView.operator_fee_rate).where(
        FunderView.funder_id.in_(funder_ids)))
    return {funder_id: rate for funder_id, rate in rows.all()}


async def run_settlement(session: AsyncSession, clock: Clock, default_fee_rate: Decimal) -> list[Settlement]:
    """Settle every accepted, unsettled charge: one settlement per provider and funder, the fee at the
    funder's contract rate (``default_fee_rate`` for a funder payments does not know)."""
    from . import corrections  # (it imports this module)

    now = clock.now()
    settlements: list[Settlement] = []
    async with SettlementBatch(session, now) as batch:
        known_rates = await fee_rates(session, await batch.funders())
        pending = await corrections.pending(session)
        async for funder_id, provider_id, charges in batch.groups():
            fee_rate = domain.fee_rate_for(known_rates.get(funder_id), default_fee_rate)
            offset = domain.settle_with_corrections([c.amount_cents for c in charges], fee_rate,
                                                    pending.get((funder_id, provider_id), []))
            figures = offset.figures
            settlement = Settlement(
                id=new_id(bank_texts), funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
                gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                fee_rate=str(fee_rate), created_at=now, correction_count=len(offset.offset))
            session.add(settlement)
            await session.flush()
            await post(session, "settlement", settlement.id, domain.settlement_postings(provider_id, figures), now)
            await corrections.mark_offset(session, settlement.id, offset.offset)
            await add_event(session, SettlementCreated(
                settlement_id=settlement.id, funder_id=funder_id, provider_id=provider_id, charge_count=len(charges),
                gross_cents=figures.gross_cents, fee_cents=figures.fee_cents, net_cents=figures.net_cents,
                fee_rate=fee_rate, created_at=now), SOURCE)
            await batch.settled(settlement.id, funder_id, provider_id, charges, figures.charge_fees)
            settlements.append(settlement)
            log.info("settlement.created", settlement_id=settlement.id, provider_id=provider_id, funder_id=funder_id,
                     charges=len(charges), gross_cents=figures.gross_cents, fee_cents=figures.fee_cents)
    return settlements


# ------------------------------------------------------------------ settling many charges at once
@dataclass(frozen=True)
class ToSettle:
    id: str
    voucher_id: str
    category: str
    amount_cents: int
    accepted_at: datetime


_SETTLE_ORDER = (Charge.funder_id, Charge.provider_id, Charge.accepted_at, Charge.id)
_SENTINELS = ("@@settle-eid@@", "@@settle-cid@@", "@@settle-vid@@", 7777777701, 7777777702, 7777777703)


class SettlementBatch:
    """The charges of one settlement run, in the run's transaction: taken (``FOR UPDATE SKIP LOCKED``),
    then handed out one (funder, provider) group at a time, in (accepted_at, id) order; each group the
    caller settles (``settled``) gets its charges updated and one ``ChargeSettled`` outbox row per charge.

    On PostgreSQL the charges are copied into a temporary table once and read group by group (memory
    stays one group's), the fees go in with ``COPY`` and one ``UPDATE ... FROM`` at the end, and the
    events with ``COPY`` (each body the one ``Envelope.wrap`` makes, formatted from a template made by it
    per settlement and category). Elsewhere (SQLite) the same rows go in with ordinary statements."""

    def __init__(self, session: AsyncSession, now: datetime):
        self.session, self.now = session, now
        self.pg = None
        self._rows: list | None = None
        self._fees: list[tuple[str, str, int]] = []

    async def __aenter__(self) -> "SettlementBatch":
        if self.session.bind.dialect.name == "postgresql":
            conn = await self.session.connection()
            await conn.exec_driver_sql("SELECT 1")  # the adapter begins its transaction at its first statement
            self.pg = (await conn.get_raw_connection()).driver_connection
            if not self.pg.is_in_transaction():
                raise RuntimeError("a settlement run must be inside a transaction")
            await self.pg.execute("DROP TABLE IF EXISTS settle_charges; DROP TABLE IF EXISTS settle_fees")
            await self.pg.execute(
                "CREATE TEMP TABLE settle_charges ON COMMIT DROP AS SELECT id, funder_id, provider_id, voucher_id, "
                "category, amount_cents, accepted_at FROM payments_charge WHERE status = $1 AND settlement_id IS "
                "NULL FOR UPDATE SKIP LOCKED".replace("$1", f"'{domain.ACCEPTED}'"),
                timeout=WHOLE_RUN_STATEMENT_SECONDS)
            await self.pg.execute(
                "CREATE INDEX ON settle_charges (funder_id, provider_id, accepted_at, id); ANALYZE settle_charges; "
                "CREATE TEMP TABLE settle_fees (id varchar PRIMARY KEY, settlement_id varchar NOT NULL, "
                "fee bigint NOT NULL) ON COMMIT DROP")
        else:
            q = (select(Charge.id, Charge.funder_id, Charge.provider_id, Charge.voucher_id, Charge.category,
                        Charge.amount_cents, Charge.accepted_at)
                 .where(Charge.status == domain.ACCEPTED, Charge.settlement_id.is_(None))
                 .order_by(*_SETTLE_ORDER).with_for_update(skip_locked=True))
            self._rows = (await self.session.execute(q)).all()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None and self.pg is not None:
            await self._flush_fees()
            await self.pg.execute(
                "UPDATE payments_charge c SET status = $1, settlement_id = f.settlement_id, fee_cents = f.fee, "
                "net_cents = c.amount_cents - f.fee FROM settle_fees f WHERE c.id = f.id"
                .replace("$1", f"'{domain.SETTLED}'"), timeout=WHOLE_RUN_STATEMENT_SECONDS)

    async def funders(self) -> set[str]:
        if self.pg is not None:
            return {r[0] for r in await self.pg.fetch("SELECT DISTINCT funder_id FROM settle_charges")}
        return {r.funder_id for r in self._rows}

    async def groups(self):  # noqa: ANN201  (async iterator of (funder_id, provider_id, [ToSettle]))
        if self.pg is None:
            for (funder_id, provider_id), group in groupby(self._rows, key=lambda r: (r.funder_id, r.provider_id)):
                yield funder_id, provider_id, [ToSettle(r.id, r.voucher_id, r.category, r.amount_cents, r.accepted_at)
                                               for r in group]
            return
        keys = await self.pg.fetch("SELECT funder_id, provider_id FROM settle_charges GROUP BY 1, 2 ORDER BY 1, 2")
        for funder_id, provider_id in keys:
            rows = await self.pg.fetch(
                "SELECT id, voucher_id, category, amount_cents, accepted_at FROM settle_charges "
                "WHERE funder_id = $1 AND provider_id = $2 ORDER BY accepted_at, id", funder_id, provider_id)
            yield funder_id, provider_id, [ToSettle(*r) for r in rows]

    async def settled(self, settlement_id: str, funder_id: str, provider_id: str, charges: list[ToSettle],
                      fees: list[int]) -> None:
        """The group's charges belong to this settlement, with these fees (one each, in order)."""
        if self.pg is None:
            await self.session.execute(
                update(_C).where(_C.c.id == bindparam("cid")).values(
                    status=domain.SETTLED, settlement_id=settlement_id, fee_cents=bindparam("fee"),
                    net_cents=bindparam("net")),
                [{"cid": c.id, "fee": fee, "net": c.amount_cents - fee} for c, fee in zip(charges, fees)])
            await add_events(self.session, [ChargeSettled(
                charge_id=c.id, settlement_id=settlement_id, voucher_id=c.voucher_id, funder_id=funder_id,
                provider_id=provider_id, category=c.category, gross_cents=c.amount_cents, fee_cents=fee,
                net_cents=c.amount_cents - fee, settled_at=self.now) for c, fee in zip(charges, fees)], SOURCE)
            return
        self._fees.extend((c.id, settlement_id, fee) for c, fee in zip(charges, fees))
        if len(self._fees) >= 50_000:
            await self._flush_fees()
        templates: dict[str, tuple[str, str, datetime] | None] = {}
        rows = []
        for c, fee in zip(charges, fees):
            if c.category not in templates:
                templates[c.category] = self._template(settlement_id, funder_id, provider_id, c.category)
            t = templates[c.category]
            if t is None:  # a value the template cannot hold apart: this event the ordinary way
                _env, row = event_row(ChargeSettled(
                    charge_id=c.id, settlement_id=settlement_id, voucher_id=c.voucher_id, funder_id=funder_id,
                    provider_id=provider_id, category=c.category, gross_cents=c.amount_cents, fee_cents=fee,
                    net_cents=c.amount_cents - fee, settled_at=self.now), SOURCE)
                rows.append((row["message_id"], row["routing_key"], row["body"], row["created_at"], 0))
                continue
            fmt, key, at = t
            eid = new_id()
            rows.append((eid, key, fmt % (eid, _json_text(c.id), _json_text(c.voucher_id), c.amount_cents, fee,
                                          c.amount_cents - fee), at, 0))
        await self.pg.copy_records_to_table("outbox", records=rows, columns=[
            "message_id", "routing_key", "body", "created_at", "attempts"])
        wake_relay_on_commit(self.session)

    def _template(self, settlement_id: str, funder_id: str, provider_id: str,
                  category: str) -> tuple[str, str, datetime] | None:
        """A %-format of the body ``Envelope.wrap`` makes for a charge of this group: its id (and the
        correlation id when that is the event's own), charge id, voucher id, gross, fee and net left open."""
        eid, cid, vid, gross, fee, net = _SENTINELS
        env, row = event_row(ChargeSettled(
            charge_id=cid, settlement_id=settlement_id, voucher_id=vid, funder_id=funder_id, provider_id=provider_id,
            category=category, gross_cents=gross, fee_cents=fee, net_cents=net, settled_at=self.now), SOURCE)
        own = env.correlationid == env.id
        env = env.model_copy(update={"id": eid, "correlationid": eid if own else env.correlationid})
        body = env.model_dump_json()
        marks = [eid, cid, vid, str(gross), str(fee), str(net)]
        # the ids may stand twice (the subject is the charge id; the correlation id the event's own)
        if any(body.count(m) < 1 for m in marks[:3]) or any(body.count(m) != 1 for m in marks[3:]):
            return None
        fmt = body.replace("%", "%%")
        for m, spec in zip(marks, ("%(0)s", "%(1)s", "%(2)s", "%(3)d", "%(4)d", "%(5)d")):
            fmt = fmt.replace(m, spec)
        return _Positional(fmt), row["routing_key"], row["created_at"]

    async def _flush_fees(self) -> None:
        if self._fees:
            await self.pg.copy_records_to_table("settle_fees", records=self._fees,
                                                columns=["id", "settlement_id", "fee"])
            self._fees = []


class _Positional(str):
    """A %-format with named places ``%(0)s``..``%(5)d`` filled from a tuple (a place may come twice)."""

    def __mod__(self, values: tuple) -> str:  # type: ignore[override]
        return str.__mod__(self, dict(zip(("0", "1", "2", "3", "4", "5"), values)))


def _json_text(value: str) -> str:
    """``value`` as it stands inside a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


async def ledger_check(session: AsyncSession) -> dict:
    """The ledger's invariants on the live database (``seteli-payments ledger-check``, ``GET /ledger/check``):

    - the entries sum to zero and every ledger transaction balances;
    - no voucher is charged beyond its entitlement in any period: the units charged for services in a
      period (``seteli_shared.periods``, with what a month carries over when the funder's rule says so)
      are at most the projection's units per period; a personal budget's money at most its budget;
    - what is settled equals the accepted charges settled, minus their fees, net of corrections: each
      settlement's gross and fee are its charges' sums less those of the corrections it offset, its net
      gross less fee and never negative, and each settled charge's net is its amount less its fee;
    - corrections are of settled charges, never remove more than the charge had, and the charge's running
      totals are its corrections' sums;
    - each provider's payable is its open items: its accepted, unsettled charges owed to it, less the
      corrections neither offset by a settlement nor claimed back yet;
    - the bank side (``banking``): the bank account's balance is the bank transactions booked, each
      provider's payout_due the net of its payouts the bank has not executed, its recovery_due the net of
      its recovery claims not repaid, and each claim's figures its corrections' sums.
    """

    entries_total = (await session.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)))).scalar_one()
    unbalanced = (await session.execute(
        select(LedgerEntry.transaction_id).group_by(LedgerEntry.transaction_id)
        .having(func.sum(LedgerEntry.amount_cents) != 0))).scalars().all()
    settled = (await session.execute(select(
        func.coalesce(func.sum(Settlement.gross_cents), 0), func.coalesce(func.sum(Settlement.fee_cents), 0),
        func.coalesce(func.sum(Settlement.net_cents), 0)))).one()
    settled_charges = (await session.execute(select(
        func.coalesce(func.sum(Charge.amount_cents), 0), func.coalesce(func.sum(Charge.fee_cents), 0)).where(
        Charge.status == domain.SETTLED))).one()
    k = ChargeCorrection
    offset = (await session.execute(select(
        func.coalesce(func.sum(k.amount_cents), 0), func.coalesce(func.sum(k.fee_cents), 0)).where(
        k.offset_settlement_id.is_not(None)))).one()
    over = await _vouchers_over_entitlement(session)
    mismatched = await _settlements_not_matching_charges(session)
    bad_corrections = await _corrections_not_matching_charges(session)
    payables = await _payables_not_open_items(session)
    bank = await _bank_not_matching(session)
    checks = {
        "entries_sum_to_zero": entries_total == 0,
        "every_transaction_balanced": not unbalanced,
        "settled_equals_charges_minus_fees": settled[0] == settled_charges[0] - offset[0]
        and settled[1] == settled_charges[1] - offset[1] and settled[2] == settled[0] - settled[1] and not mismatched,
        "no_voucher_beyond_entitlement": not over,
        "corrections_within_settled_charges": not bad_corrections,
        "payables_equal_open_items": not payables,
        "bank_equals_bank_transactions": not bank["bank"],
        "payouts_due_equal_unexecuted_payouts": not bank["payouts_due"],
        "recoveries_due_equal_open_claims": not bank["recoveries"],
    }
    return {"ok": all(checks.values()), "checks": checks, "unbalanced_transactions": list(unbalanced)[:20],
            "vouchers_over_entitlement": over[:20], "settlements_not_matching_charges": mismatched[:20],
            "corrections_not_matching_charges": bad_corrections[:20], "payables_not_open_items": payables[:20], "bank_not_matching": {k: v[:20] for k, v in bank.items()}}


async def _bank_not_matching(session: AsyncSession) -> dict[str, list[dict]]:
    """The bank side (``banking``): the bank account's balance is the bank transactions booked; each
    provider's payout_due is the net of its payouts the bank has not executed; its recovery_due the net of
    its claims not repaid; each claim's figures are its corrections' sums, and no correction is both
    offset and claimed."""
    def balances(pattern: str):  # noqa: ANN202
        return select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents)).where(
            LedgerEntry.account.like(pattern)).group_by(LedgerEntry.account)

    out: dict[str, list[dict]] = {"bank": [], "payouts_due": [], "recoveries": []}
    ledger_bank = int((await session.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
        LedgerEntry.account == domain.BANK))).scalar_one())
    booked = int((await session.execute(select(func.coalesce(func.sum(BankTransaction.amount_cents), 0)))
                  ).scalar_one())
    if ledger_bank != booked:
        out["bank"].append({"ledger_cents": ledger_bank, "bank_transactions_cents": booked})
    due = dict((await session.execute(balances("provider:%:payout_due"))).all())
    unexecuted = dict((await session.execute(
        select(Settlement.provider_id, func.sum(Settlement.net_cents))
        .outerjoin(Payout, Payout.settlement_id == Settlement.id)
        .outerjoin(SettlementRun, SettlementRun.id == Payout.run_id)
        .where(SettlementRun.executed_at.is_(None)).group_by(Settlement.provider_id))).all())
    for p in sorted({a.split(":")[1] for a in due} | set(unexecuted)):
        got, want = int(due.get(domain.provider_payout_due(p)) or 0), -int(unexecuted.get(p) or 0)
        if got != want:
            out["payouts_due"].append({"provider_id": p, "payout_due_cents": got, "unexecuted_cents": want})
    owed = dict((await session.execute(balances("provider:%:recovery_due"))).all())
    claims = (await session.execute(select(RecoveryClaim))).scalars().all()
    open_net: dict[str, int] = {}
    for c in claims:
        open_net[c.provider_id] = open_net.get(c.provider_id, 0) + c.net_cents - c.repaid_cents
    for p in sorted({a.split(":")[1] for a in owed} | set(open_net)):
        got, want = int(owed.get(domain.provider_recovery_due(p)) or 0), open_net.get(p, 0)
        if got != want:
            out["recoveries"].append({"provider_id": p, "recovery_due_cents": got, "open_claims_cents": want})
    K = ChargeCorrection
    sums = dict((r[0], r[1:]) for r in (await session.execute(
        select(K.recovery_claim_id, func.count(), func.sum(K.amount_cents), func.sum(K.fee_cents))
        .where(K.recovery_claim_id.is_not(None)).group_by(K.recovery_claim_id))).all())
    for c in claims:
        n, amount, fee = sums.get(c.id, (0, 0, 0))
        if (int(n), int(amount or 0), int(fee or 0)) != (c.correction_count, c.amount_cents, c.fee_cents) \
                or c.net_cents != c.amount_cents - c.fee_cents or not 0 <= c.repaid_cents <= c.net_cents:
            out["recoveries"].append({"claim_id": c.id, "reason": "claim_not_its_corrections"})
    both = (await session.execute(select(K.id).where(K.recovery_claim_id.is_not(None),
                                                     K.offset_settlement_id.is_not(None)).limit(20))).scalars().all()
    out["recoveries"] += [{"correction_id": x, "reason": "offset_and_claimed"} for x in both]
    return out


async def _corrections_not_matching_charges(session: AsyncSession) -> list[dict]:
    """Corrected charges whose corrections remove more than they had, that are not settled, or whose running
    totals are not their corrections' sums."""
    K = ChargeCorrection
    c = Charge.__table__
    sums = (select(K.charge_id, func.sum(K.units_x100).label("units"), func.sum(K.amount_cents).label("amount"),
                   func.sum(K.fee_cents).label("fee")).group_by(K.charge_id).subquery())
    rows = (await session.execute(
        select(c.c.id, c.c.status, c.c.units_x100, c.c.amount_cents, c.c.fee_cents, c.c.corrected_units_x100,
               c.c.corrected_amount_cents, sums.c.units, sums.c.amount, sums.c.fee)
        .select_from(c.outerjoin(sums, sums.c.charge_id == c.c.id))
        .where((sums.c.charge_id.is_not(None)) | (c.c.corrected_units_x100 != 0) | (c.c.corrected_amount_cents != 0))
    )).all()
    found = []
    for r in rows:
        units, amount, fee = int(r.units or 0), int(r.amount or 0), int(r.fee or 0)
        if (r.status != domain.SETTLED or units > r.units_x100 or amount > r.amount_cents or fee > (r.fee_cents or 0)
                or (units, amount) != (r.corrected_units_x100, r.corrected_amount_cents)):
            found.append({"charge_id": r.id, "status": r.status, "corrected_cents": amount,
                          "amount_cents": r.amount_cents})
    return found


async def _payables_not_open_items(session: AsyncSession) -> list[dict]:
    """Providers whose payable balance is not minus their accepted, unsettled charges plus their corrections
    not yet offset (the payable is a credit: what is owed to the provider)."""
    K = ChargeCorrection
    balance = dict((await session.execute(
        select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents))
        .where(LedgerEntry.account.like("provider:%:payable")).group_by(LedgerEntry.account))).all())
    owed = dict((await session.execute(
        select(Charge.provider_id, func.sum(Charge.amount_cents)).where(Charge.status == domain.ACCEPTED)
        .group_by(Charge.provider_id))).all())
    owes = dict((await session.execute(
        select(K.provider_id, func.sum(K.amount_cents)).where(K.offset_settlement_id.is_(None),
                                                              K.recovery_claim_id.is_(None))
        .group_by(K.provider_id))).all())
    providers = {a.split(":", 1)[1].rsplit(":", 1)[0] for a in balance} | set(owed) | set(owes)
    found = []
    for p in sorted(providers):
        want = -int(owed.get(p) or 0) + int(owes.get(p) or 0)
        got = int(balance.get(domain.provider_payable(p)) or 0)
        if got != want:
            found.append({"provider_id": p, "payable_cents": got, "open_items_cents": want})
    return found


async def _vouchers_over_entitlement(session: AsyncSession) -> list[dict]:
    """Every (voucher, period) whose charged units exceed the projection's units for the period (with
    what the previous month carried in), or a personal budget's money its budget."""
    v = VoucherView.__table__
    per_day = (await session.execute(
        select(Charge.voucher_id, Charge.service_date, func.sum(Charge.units_x100 - Charge.corrected_units_x100),
               func.sum(Charge.amount_cents - Charge.corrected_amount_cents))
        .where(Charge.status != CANCELLED).group_by(Charge.voucher_id, Charge.service_date))).all()
    by_voucher: dict[str, list] = {}
    for voucher_id, day, units, amount in per_day:
        by_voucher.setdefault(voucher_id, []).append((day, int(units), int(amount)))
    views = {r.voucher_id: r for r in (await session.execute(select(
        v.c.voucher_id, v.c.issued, v.c.kind, v.c.units_per_period_x100, v.c.period, v.c.valid_from, v.c.valid_until,
        v.c.carry_over, v.c.budget_cents))).all()}
    found = []
    for voucher_id, days in by_voucher.items():
        view = views.get(voucher_id)
        if view is None or not view.issued or view.period is None:
            found.append({"voucher_id": voucher_id, "reason": "charged_without_issued_voucher"})
            continue
        used: dict[tuple[date, date], list[int]] = {}
        for day, units, amount in days:
            bounds = periods.period_bounds(view.period, view.valid_from, view.valid_until, day)
            sums = used.setdefault(bounds, [0, 0])
            sums[0] += units
            sums[1] += amount
        for (start, end), (units, amount) in sorted(used.items()):
            if view.kind == domain.PERSONAL_BUDGET:
                if amount > (view.budget_cents or 0):
                    found.append({"voucher_id": voucher_id, "period": [start.isoformat(), end.isoformat()],
                                  "reason": "budget_exceeded", "charged_cents": amount,
                                  "budget_cents": view.budget_cents})
                continue
            previous = periods.previous_period(view.period, view.valid_from, view.valid_until, start)
            previous_used = None if previous is None else used.get(previous, [0, 0])[0]
            units_in = periods.period_units(
                units_per_period_x100=view.units_per_period_x100 or 0, period=view.period,
                carry_over=bool(view.carry_over), valid_from=view.valid_from, valid_until=view.valid_until, day=start,
                used_x100=units, previous_used_x100=previous_used)
            if units > units_in.available_x100:
                found.append({"voucher_id": voucher_id, "period": [start.isoformat(), end.isoformat()],
                              "reason": "units_exceeded", "charged": str(from_hundredths(units)),
                              "available": str(from_hundredths(units_in.available_x100))})
    return found


async def _settlements_not_matching_charges(session: AsyncSession) -> list[dict]:
    """Settlements whose figures are not their charges' (and settled charges whose net is not amount - fee)."""
    s, c, k = Settlement.__table__, Charge.__table__, ChargeCorrection.__table__
    sums = (select(c.c.settlement_id, func.count().label("n"), func.sum(c.c.amount_cents).label("gross"),
                   func.sum(c.c.fee_cents).label("fee"), func.sum(c.c.net_cents).label("net"),
                   func.sum(case((c.c.net_cents != c.c.amount_cents - c.c.fee_cents, 1), else_=0)).label("bad_net"),
                   func.sum(case((c.c.status != domain.SETTLED, 1), else_=0)).label("not_settled"))
            .where(c.c.settlement_id.is_not(None)).group_by(c.c.settlement_id).subquery())
    less = (select(k.c.offset_settlement_id, func.count().label("kn"), func.sum(k.c.amount_cents).label("kgross"),
                   func.sum(k.c.fee_cents).label("kfee"), func.sum(k.c.net_cents).label("knet"))
            .where(k.c.offset_settlement_id.is_not(None)).group_by(k.c.offset_settlement_id).subquery())
    rows = (await session.execute(
        select(s.c.id, s.c.charge_count, s.c.correction_count, s.c.gross_cents, s.c.fee_cents, s.c.net_cents,
               sums.c.n, sums.c.gross, sums.c.fee, sums.c.net, sums.c.bad_net, sums.c.not_settled,
               less.c.kn, less.c.kgross, less.c.kfee, less.c.knet)
        .select_from(s.outerjoin(sums, sums.c.settlement_id == s.c.id)
                     .outerjoin(less, less.c.offset_settlement_id == s.c.id)))).all()
    found = [{"settlement_id": r.id, "charge_count": r.charge_count, "charges": int(r.n or 0)}
             for r in rows if (r.charge_count, r.correction_count, r.gross_cents, r.fee_cents, r.net_cents, 0, 0) != (
                 int(r.n or 0), int(r.kn or 0), int(r.gross or 0) - int(r.kgross or 0),
                 int(r.fee or 0) - int(r.kfee or 0), int(r.net or 0) - int(r.knet or 0), int(r.bad_net or 0),
                 int(r.not_settled or 0)) or r.net_cents != r.gross_cents - r.fee_cents or r.net_cents < 0]
    orphans = (await session.execute(select(Charge.id).where(
        Charge.status == domain.SETTLED, Charge.settlement_id.is_(None)).limit(20))).scalars().all()
    return found + [{"charge_id": cid, "reason": "settled_without_settlement"} for cid in orphans]


async def balances(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents))
                                  .group_by(LedgerEntry.account).order_by(LedgerEntry.account))).all()
    return {account: int(total) for account, total in rows}


# ------------------------------------------------------------------ reads, each caller its own tenant's
@dataclass(frozen=True)
class ChargeFilter:
    voucher_id: str | None = None
    status: str | None = None
    service_date_from: date | None = None
    service_date_to: date | None = None
    funder_id: str | None = None
    provider_id: str | None = None


async def charges_page(sessions: Sessions, scope: TenantScope, f: ChargeFilter,
                       page: PageParams) -> tuple[list[Charge], str | None]:
    """The caller's tenant's charges in the order they were accepted."""
    q = scope.restrict(select(Charge), funder=Charge.funder_id, provider=Charge.provider_id)
    for column, value in ((Charge.voucher_id, f.voucher_id), (Charge.status, f.status),
                          (Charge.funder_id, f.funder_id), (Charge.provider_id, f.provider_id)):
        if value is not None:
            q = q.where(column == value)
    if f.service_date_from is not None:
        q = q.where(Charge.service_date >= f.service_date_from)
    if f.service_date_to is not None:
        q = q.where(Charge.service_date <= f.service_date_to)
    async with sessions() as session:
        return await paginate(session, q, [Charge.accepted_at, Charge.id], page)


async def settlements_page(sessions: Sessions, scope: TenantScope, page: PageParams, *,
                           funder_id: str | None = None,
                           provider_id: str | None = None) -> tuple[list[Settlement], str | None]:
    """The caller's tenant's settlements in the order they were made."""
    q = scope.restrict(select(Settlement), funder=Settlement.funder_id, provider=Settlement.provider_id)
    if funder_id is not None:
        q = q.where(Settlement.funder_id == funder_id)
    if provider_id is not None:
        q = q.where(Settlement.provider_id == provider_id)
    async with sessions() as session:
        return await paginate(session, q, [Settlement.created_at, Settlement.id], page)


async def get_charge(sessions: Sessions, charge_id: str) -> Charge:
    async with sessions() as session:
        charge = await session.get(Charge, charge_id)
    if charge is None:
        raise NotFound("charge")
    return charge


async def get_settlement(sessions: Sessions, settlement_id: str) -> tuple[Settlement, list[Charge]]:
    async with sessions() as session:
        s = await session.get(Settlement, settlement_id)
        if s is None:
            raise NotFound("settlement")
        charges = (await session.execute(select(Charge).where(Charge.settlement_id == s.id)
                                         .order_by(Charge.id))).scalars().all()
    return s, list(charges)
