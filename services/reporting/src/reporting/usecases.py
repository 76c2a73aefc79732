"""Reporting's use cases. Its state changes are the event handlers (``handlers.py``: each folds one
event into the read models in the consumer's transaction); what its API does is read them."""
from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal
from typing import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from seteli_shared import progress as long_job
from seteli_shared.auth import TenantScope
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict
from seteli_shared.events import Envelope
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.schemas import PageParams, paginate

from . import disclosure, domain, handlers, linked, reports
from .domain import Period
from .models import READ_MODELS, Feedback, FunderFigures, ReceivedEvent, VoucherFact

log = get_logger(__name__)

Sessions = async_sessionmaker[AsyncSession]


async def funder_figures(sessions: Sessions, funder_id: str) -> FunderFigures:
    """A funder's figures; all zero for a funder no event has named yet."""
    async with sessions() as session:
        return await session.get(FunderFigures, funder_id) or FunderFigures(funder_id=funder_id)


async def figures_page(sessions: Sessions, scope: TenantScope, page: PageParams) -> tuple[list[FunderFigures], str | None]:
    async with sessions() as session:
        q = scope.restrict(select(FunderFigures), funder=FunderFigures.funder_id)
        return await paginate(session, q, [FunderFigures.funder_id], page)


# ------------------------------------------------------------------ monitoring reports (issue 10)
def _report(m: reports.Month) -> dict:
    return {"schema": domain.SCHEMA, "funder_id": m.funder_id, "period": m.period, "min_clients": domain.MIN_CLIENTS,
            "categories": [r.public() for r in m.rows], "total": m.total.public(),
            "providers": [r.public() for r in m.providers],
            "switches": {**m.switch_total.public(), "age_bands": [b.public() for b in m.bands]}}


async def monthly_report(sessions: Sessions, funder_id: str | None, period: str) -> dict:
    """The standard monthly monitoring report of a funder (``None``: operator-wide, every funder's),
    suppressed over the linked tables of the month (``linked``)."""
    p = Period.parse(period)
    async with sessions() as s:
        if funder_id is None:
            m, funders = await reports.operator_month(s, str(p))
            linked.apply(m, linked.operator_pattern(m, funders)[1])
        else:
            m = await reports.client_month(s, funder_id, p)
            linked.apply(m, linked.pattern(m))
        await reports.add_provider_figures(s, m, p)  # rows of providers' figures only: nothing to hide
    return _report(m)


async def monthly_audit(sessions: Sessions, funder_id: str | None, period: str) -> dict:
    """The audit of a funder's month as published (``None``: the operator's statistics beside every
    funder's report): each suppressed cell's interval given everything shown, and its verdict."""
    p = Period.parse(period)
    started = time.perf_counter()
    async with sessions() as s:
        if funder_id is None:
            m, funders = await reports.operator_month(s, str(p))
        else:
            m = await reports.client_month(s, funder_id, p, shares=False)
    if funder_id is None:
        tables, hidden = linked.operator_pattern(m, funders, with_tables=True)
        tables = tables or disclosure.Tables({}, [])
    else:
        tables, hidden = linked.tables(m), linked.pattern(m)
    result = disclosure.audit(tables, hidden)
    log.info("report.audited", funder_id=funder_id, period=str(p), cells=len(result.intervals),
             passed=result.passed, seconds=round(time.perf_counter() - started, 3))
    return {"funder_id": funder_id, "period": str(p), "min_clients": domain.MIN_CLIENTS,
            "protection_share": disclosure.PROTECTION_SHARE, "passed": result.passed,
            "cells": [_interval(i) for i in result.intervals],
            "narrowest": _interval(result.narrowest) if result.narrowest else None,
            "seconds": round(time.perf_counter() - started, 4)}


def _interval(i: disclosure.Interval) -> dict:
    """A cell's interval in the figure's published unit (units from hundredths)."""
    funder, table, *row, figure = i.key
    scale = Decimal(100) if figure in linked.HUNDREDTHS else Decimal(1)

    def shown(v: float | None) -> Decimal | None:
        return None if v is None else (Decimal(repr(v)) / scale).quantize(Decimal("0.01"))

    names = {"category": ["category"], "provider": ["category", "provider_id"], "age_band": ["age_band"]}
    return {"funder_id": None if funder == linked.ALL_FUNDERS else funder, "table": table,
            "row": dict(zip(names.get(table, []), row)), "figure": figure, "lower": shown(i.lower),
            "upper": shown(i.upper), "verdict": i.verdict, "model": i.model}


async def price_development(sessions: Sessions, funder_id: str, category: str | None) -> list[dict]:
    async with sessions() as s:
        rows = await reports.price_development(s, funder_id, category)
        periods = sorted({r.key["period"] for r in rows})
        months = await reports.client_months(s, funder_id, periods) if periods else {}
    for m in months.values():
        linked.apply(m, linked.pattern(m))
    linked.price_rows(rows, {p: m for (_, p), m in months.items()})
    return [r.public() for r in rows]


async def providers_with_prices(sessions: Sessions, funder_id: str, category: str | None,
                                periods: list[str]) -> dict[str, int]:
    """month -> providers with a price in force in the category (or in any, counted once)."""
    async with sessions() as s:
        return await reports.providers_with_prices(s, funder_id, category, periods)


async def monthly_volume(sessions: Sessions, funder_id: str) -> list[dict]:
    async with sessions() as s:
        months = await reports.client_months(s, funder_id)
    for m in months.values():
        linked.apply(m, linked.pattern(m))
    rows = reports.monthly_volume(months)
    by_period = {p: m for (_, p), m in months.items()}
    for r in rows:
        total = by_period[r.key["period"]].total
        r.suppressed = {n: total.suppressed[n] for n in reports.VOLUME if n in total.suppressed}
    return [r.public() for r in rows]


async def give_feedback(sessions: Sessions, clock: Clock, voucher_id: str, rating: int, text: str | None) -> Feedback:
    """A client's feedback for this month: once per voucher and month. A second in the same month is
    refused (409 ``feedback_already_given``, naming the month and when the next may be given) and the
    first stays as it was: an answer that silently replaced an earlier one would rewrite what the funder
    may already have read."""
    period = Period.of(clock.today())
    try:
        async with sessions() as s, s.begin():
            found = (await s.exec(select(Feedback).where(Feedback.voucher_id == voucher_id,
                                                         Feedback.period == str(period)))).first()
            if found is None:
                row = Feedback(feedback_id=new_id(), voucher_id=voucher_id, period=str(period), rating=rating,
                               text=text or None, given_at=clock.now())
                s.add(row)
                await s.flush()
                log.info("report.feedback_given", voucher_id=voucher_id, period=str(period), rating=rating)
                return row
    except IntegrityError:  # the same voucher's feedback, given at the same moment: the other one won
        found = None
    raise Conflict("feedback_already_given", "feedback for this voucher has been given this month already; the "
                   "next can be given next month", period=str(period), given_on=found.given_at.date().isoformat()
                   if found is not None else None, next_from=period.next().first.isoformat())


async def feedback_page(sessions: Sessions, funder_id: str, period: str, page: PageParams
                        ) -> tuple[list[tuple[Feedback, str]], str | None]:
    """A funder's clients' feedback of a month, with each voucher's category (never another funder's)."""
    p = Period.parse(period)
    async with sessions() as s:
        q = (select(Feedback).join(VoucherFact, VoucherFact.voucher_id == Feedback.voucher_id)
             .where(VoucherFact.funder_id == funder_id, Feedback.period == str(p)))
        rows, cursor = await paginate(s, q, [Feedback.feedback_id], page)
        ids = [r.voucher_id for r in rows]
        cats = dict((await s.execute(select(VoucherFact.voucher_id, VoucherFact.category)
                                     .where(VoucherFact.voucher_id.in_(ids)))).all()) if ids else {}
        return [(r, cats.get(r.voucher_id, "")) for r in rows], cursor


REBUILD_CHUNK = 20_000
REBUILD_PROGRESS_SECONDS = 60
REBUILD_SCHEMA = "reporting_rebuild"  # the read models being folded again, beside the live ones
RETIRED_SCHEMA = "reporting_retired"  # the live read models swapped out, dropped at once
REBUILD_LOCK = 0x5E7E11_0010  # pg advisory lock: one rebuild at a time
REBUILD_SWAP_LOCK_SECONDS = 5.0  # the swap waits this long for a table (reports reading it), then again
REBUILD_SWAP_ATTEMPTS = 20
LOCK_FAILURES = {"55P03", "40P01"}  # lock_not_available (lock_timeout), deadlock_detected

OnBatch = Callable[[int], Awaitable[None]]


class _Progress:
    """Events folded so far, logged once a minute (a rebuild of millions of events takes a while)."""

    def __init__(self) -> None:
        self.folded = 0
        self.swaps = 0
        self.started = time.monotonic()
        self.next_report = self.started + REBUILD_PROGRESS_SECONDS

    def add(self, n: int) -> None:
        self.folded += n
        if time.monotonic() >= self.next_report:
            elapsed = time.monotonic() - self.started
            log.info("report.rebuilding", events=self.folded, seconds=round(elapsed),
                     events_per_second=round(self.folded / elapsed))
            self.next_report += REBUILD_PROGRESS_SECONDS


async def _fold_query(s: AsyncSession, query: sa.Select, progress: "_Progress") -> list:
    """Fold the archived events ``query`` selects (the envelope its last column); the rows read."""
    rows = (await s.execute(query)).all()
    if rows:
        folded = await _fold_rows(s, [r[-1] for r in rows])
        progress.add(folded)
        await long_job.advance(folded)  # GET /jobs/{id}
    return rows


async def _fold_rows(s: AsyncSession, bodies: list[str]) -> int:
    items = []
    for body in bodies:
        env = Envelope.model_validate_json(body)
        try:
            items.append((env, env.event()))
        except KeyError:  # a type no read model knows (yet)
            continue
    await handlers.fold(s, items)
    return len(items)


def _in_time_order(after: tuple | None, chunk: int, up_to_seq: int | None = None) -> sa.Select:
    """The next ``chunk`` archived events in time order (keyset paging on the (time, id) index); with
    ``up_to_seq``, only those archived by then (and those from before arrival was numbered)."""
    t = ReceivedEvent.__table__
    query = sa.select(t.c.time, t.c.id, t.c.envelope)
    if after is not None:
        query = query.where(sa.tuple_(t.c.time, t.c.id) > sa.tuple_(*after))
    if up_to_seq is not None:
        query = query.where(sa.or_(t.c.seq.is_(None), t.c.seq <= up_to_seq))
    return query.order_by(t.c.time, t.c.id).limit(chunk)


async def rebuild(sessions: Sessions, chunk: int = REBUILD_CHUNK, on_batch: OnBatch | None = None) -> dict[str, int]:
    """Fold every archived event again into empty read models, which then replace the live ones.

    The archive is read in the events' time order (the order they were delivered in, near enough):
    the fold gives the same rows in any order, but in this one a charge's acceptance and its settlement
    mostly fall in the same batch, so each fact is written once (1.6x the speed of the id order). Larger
    batches write each row fewer times: 20,000 events a batch fold 1.5x as fast as 2,000.

    On PostgreSQL the new read models are folded beside the live ones (``_rebuild_beside``), a
    transaction per batch, while the consumer goes on folding into the live ones and the reports answer
    from them; on SQLite (the handlers' own tests) the tables are emptied and folded in one transaction.
    ``on_batch(events folded)`` is called after each committed batch (tests use it to send events
    while a rebuild runs)."""
    async with sessions() as s:
        postgres = s.bind.dialect.name == "postgresql"
    progress = _Progress()
    async with long_job.track(sessions, "reporting.rebuild") as job:
        async with sessions() as s:  # the archive's size: the events to fold (a few more may arrive meanwhile)
            job.total = (await s.execute(sa.select(sa.func.count()).select_from(ReceivedEvent.__table__))).scalar_one()
        if postgres:
            await _rebuild_beside(sessions, chunk, progress, on_batch)
        else:
            await _rebuild_in_place(sessions, chunk, progress)
    log.info("report.rebuilt", events=progress.folded, seconds=round(time.monotonic() - progress.started))
    return {"events_folded": progress.folded, "swap_attempts": progress.swaps}


async def _rebuild_in_place(sessions: Sessions, chunk: int, progress: _Progress) -> None:
    async with sessions() as s, s.begin():
        for model in READ_MODELS:
            await s.execute(sa.delete(model.__table__))
        after = None
        while rows := await _fold_query(s, _in_time_order(after, chunk), progress):
            after = (rows[-1][0], rows[-1][1])


async def _rebuild_beside(sessions: Sessions, chunk: int, progress: _Progress, on_batch: OnBatch | None) -> None:
    """The read models folded again in a schema of their own, committed a batch at a time, then swapped
    in for the live ones in one short transaction.

    1. Empty copies of the read models (same columns, constraints and index names) in ``REBUILD_SCHEMA``.
    2. A snapshot: the highest arrival number archived, read while no event is being archived.
    3. Every event up to it, in time order, folded into the copies: the fold's SQL names its tables
       unqualified, so each batch's ``search_path`` puts the copies first. Each batch commits, so the
       old row versions it leaves are pruned as it goes (a single transaction of 20 million events
       slowed to half its speed).
    4. The events archived meanwhile, in arrival order, again a batch at a time, until few are left.
    5. One transaction: the archive locked against new events (the consumer waits), the last arrivals
       folded, the live tables moved out and the copies moved in. Reports wait for that moment only.
    A rebuild that fails leaves the live read models as they were; the next one starts over.
    """
    engine = sessions.kw["bind"]
    names = [m.__tablename__ for m in READ_MODELS]
    async with engine.connect() as holder:  # one rebuild at a time, for as long as this connection lives
        await holder.execution_options(isolation_level="AUTOCOMMIT")
        if not (await holder.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": REBUILD_LOCK})).scalar_one():
            raise Conflict("rebuild_running", "a rebuild of the read models is already running")
        try:
            live, path = await _prepare_copies(sessions)
            step = f"SET LOCAL search_path TO {REBUILD_SCHEMA}, {path}"
            seen = await _arrived(sessions)
            after = None
            while True:
                async with sessions() as s, s.begin():
                    await s.execute(sa.text(step))
                    rows = await _fold_query(s, _in_time_order(after, chunk, seen), progress)
                if not rows:
                    break
                after = (rows[-1][0], rows[-1][1])
                if on_batch is not None:
                    await on_batch(progress.folded)
            while (now := await _arrived(sessions)) - seen > chunk:  # caught up without stopping the consumer
                await _fold_arrivals(sessions, step, seen, now, chunk, progress)
                seen = now
            folded_before_swap = progress.folded
            for attempt in range(1, REBUILD_SWAP_ATTEMPTS + 1):
                try:
                    await _swap(sessions, step, live, names, seen, chunk, progress)
                    break
                except DBAPIError as e:  # a report read holding a table, or a deadlock with one: again
                    if getattr(e.orig, "sqlstate", None) not in LOCK_FAILURES or attempt == REBUILD_SWAP_ATTEMPTS:
                        raise
                    log.warning("report.rebuild_swap_waiting", attempt=attempt, sqlstate=e.orig.sqlstate)
                    progress.folded = folded_before_swap
                    await asyncio.sleep(min(attempt, 5) * REBUILD_SWAP_LOCK_SECONDS)
            progress.swaps = attempt
            async with sessions() as s, s.begin():
                await s.execute(sa.text(f"DROP SCHEMA {RETIRED_SCHEMA} CASCADE"))
                await s.execute(sa.text(f"DROP SCHEMA {REBUILD_SCHEMA} CASCADE"))
                await s.execute(sa.text(f"ANALYZE {', '.join(f'{live}.{n}' for n in names)}"))
        except BaseException:
            async with sessions() as s, s.begin():  # the live read models were not touched
                await s.execute(sa.text(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"))
            raise
        finally:
            await holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": REBUILD_LOCK})


async def _swap(sessions: Sessions, step: str, live: str, names: list[str], seen: int, chunk: int,
                progress: _Progress) -> None:
    """The last arrivals folded and the copies swapped in, in one transaction that waits at most
    ``REBUILD_SWAP_LOCK_SECONDS`` for each lock: the consumer is held while it runs."""
    async with sessions() as s, s.begin():
        await s.execute(sa.text(step))
        await s.execute(sa.text(f"SET LOCAL lock_timeout = '{int(REBUILD_SWAP_LOCK_SECONDS * 1000)}ms'"))
        await s.execute(sa.text("LOCK TABLE reporting_event IN SHARE MODE"))
        await _fold_arrivals(sessions, step, seen, None, chunk, progress, session=s)
        await s.execute(sa.text(f"LOCK TABLE {', '.join(f'{live}.{n}' for n in names)} IN ACCESS EXCLUSIVE MODE"))
        await s.execute(sa.text(f"CREATE SCHEMA {RETIRED_SCHEMA}"))
        for n in names:
            await s.execute(sa.text(f"ALTER TABLE {live}.{n} SET SCHEMA {RETIRED_SCHEMA}"))
            await s.execute(sa.text(f"ALTER TABLE {REBUILD_SCHEMA}.{n} SET SCHEMA {live}"))


async def _prepare_copies(sessions: Sessions) -> tuple[str, str]:
    """Empty copies of the read models in ``REBUILD_SCHEMA``, with the live tables' constraint and index
    names (they are the migrations' names once swapped in). The live schema and search_path."""
    async with sessions() as s, s.begin():
        live = (await s.execute(sa.text("SELECT quote_ident(current_schema())"))).scalar_one()
        path = (await s.execute(sa.text("SHOW search_path"))).scalar_one()
        await s.execute(sa.text(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE"))  # a failed swap's leftovers
        await s.execute(sa.text(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"))  # a failed rebuild's
        await s.execute(sa.text(f"CREATE SCHEMA {REBUILD_SCHEMA}"))
        for model in READ_MODELS:
            name = model.__tablename__
            copy = f"{REBUILD_SCHEMA}.{name}"
            await s.execute(sa.text(f"CREATE TABLE {copy} (LIKE {live}.{name} INCLUDING DEFAULTS INCLUDING "
                                    "CONSTRAINTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE)"))
            options = (await s.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                       {"t": f"{live}.{name}"})).scalar_one()
            if options:  # the table's storage parameters (reporting_charge's fillfactor: migration 0011)
                await s.execute(sa.text(f"ALTER TABLE {copy} SET ({', '.join(options)})"))
            keys = (await s.execute(sa.text(
                "SELECT quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u', 'x') ORDER BY conname"),
                {"t": f"{live}.{name}"})).all()
            for constraint, definition in keys:
                await s.execute(sa.text(f"ALTER TABLE {copy} ADD CONSTRAINT {constraint} {definition}"))
            indexes = (await s.execute(sa.text(
                "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x WHERE x.indrelid = CAST(:t AS regclass) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid "
                "AND c.conrelid = x.indrelid) ORDER BY x.indexrelid"), {"t": f"{live}.{name}"})).scalars().all()
            for definition in indexes:
                moved, n = re.subn(r" ON (ONLY )?\S+ USING ", f" ON {copy} USING ", definition, count=1)
                if n != 1:
                    raise RuntimeError(f"unexpected index definition: {definition}")
                await s.execute(sa.text(moved))
    return live, path


async def _arrived(sessions: Sessions) -> int:
    """The highest arrival number archived, read while no event is being archived (so none below it
    can still commit)."""
    async with sessions() as s, s.begin():
        await s.execute(sa.text("LOCK TABLE reporting_event IN SHARE MODE"))
        t = ReceivedEvent.__table__
        return (await s.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.seq), 0)))).scalar_one()


async def _fold_arrivals(sessions: Sessions, step: str, after: int, up_to: int | None, chunk: int,
                         progress: _Progress, session: AsyncSession | None = None) -> None:
    """The events archived after arrival number ``after`` (up to ``up_to``), in arrival order, into the
    copies: a transaction per batch, or all in ``session``'s."""
    t = ReceivedEvent.__table__
    while True:
        query = sa.select(t.c.seq, t.c.envelope).where(t.c.seq > after)
        if up_to is not None:
            query = query.where(t.c.seq <= up_to)
        query = query.order_by(t.c.seq).limit(chunk)
        if session is not None:
            rows = await _fold_query(session, query, progress)
        else:
            async with sessions() as s, s.begin():
                await s.execute(sa.text(step))
                rows = await _fold_query(s, query, progress)
        if not rows:
            return
        after = rows[-1][0]
