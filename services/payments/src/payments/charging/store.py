"""The charge engine's store on a session, set-based: one batch of lines in one transaction with a handful of
statements whatever its size (``engine.ChargeStore``). The JSON bulk and CSV paths use it for every chunk;
a single charge uses it on SQLite, and on PostgreSQL when its fast path (``fast_path``) keeps meeting
concurrent changes of its voucher.

``load``:

1. the vouchers named by code are found (one statement, and one for the provider choices that let a
   provider other than the chosen one find a code);
2. the batch's vouchers are locked in one statement, in the order of their ids (two bulks, or a bulk and
   single charges, queue up on the same rows without deadlocking);
3. after the lock (new statements, so a snapshot that sees every charge committed before), what the rules
   need is read together: earlier charges with the lines' provider references, the units and money already
   charged per voucher and service date, the approvals, the price lists, the funders' deadlines, the choices.

``add``: the accepted charges' rows (``rows.ChargeRows``; their events as the store's ``AcceptedEvents`` say: a
bulk's chunk one ``ChargesAccepted`` per funder by default, a single charge its ``ChargeAccepted``) with one
statement per table: ``COPY`` on PostgreSQL
(on the session's own connection, inside its transaction), multi-row inserts elsewhere. On PostgreSQL the engine
uses ``add_stream``: the same rows, made as ``COPY`` sends them (the rules' work and the database's overlap).

A twin of a line's provider reference committed by a concurrent request after step 3 makes the charge's
insert fail on the reference's unique key: ``run_batch`` runs the batch again (nothing of it was
committed), and the second run reads the twin as an earlier charge, as a single charge would."""
from __future__ import annotations

from datetime import datetime, timezone
from itertools import chain
from typing import Iterator

from sqlalchemy import String, and_, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit, codes
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.logging import get_logger
from seteli_shared.outbox import T as OUTBOX
from seteli_shared.outbox import wake_relay_on_commit
from seteli_shared.uow import SessionUnitOfWork

from ..models import (ApprovalView, Charge, FunderView, LedgerEntry, LedgerTransaction, PriceListView,
                      ProviderChoiceView, VoucherView)
from . import domain, engine, lifecycle
from .rows import (AUDIT_COLUMNS, CHARGE_COLUMNS, ENTRY_COLUMNS, OUTBOX_COLUMNS, SINGLE, TXN_COLUMNS, AcceptedEvents,
                   ChargeRows, V2Rows, charge_row)

log = get_logger(__name__)
_V, _C, _A = VoucherView.__table__, Charge.__table__, ApprovalView.__table__
_P, _CH, _F = PriceListView.__table__, ProviderChoiceView.__table__, FunderView.__table__
_T, _E = LedgerTransaction.__table__, LedgerEntry.__table__


def utc(at: datetime | None) -> datetime | None:
    """A time the driver gave back without its zone (SQLite) as the UTC it was stored in."""
    return at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at


def voucher_on_file(row) -> engine.VoucherOnFile:  # noqa: ANN001  (a payments_voucher row)
    """A projection row as the rules take it."""
    terms = None
    if row.issued:
        terms = domain.VoucherTerms(
            row.funder_id, row.category, row.units_per_period_x100, row.period, row.value_per_unit_cents,
            row.valid_from, row.valid_until, row.provider_id, kind=row.kind or domain.SERVICE_VOUCHER,
            budget_cents=row.budget_cents, categories=tuple(row.categories or ()),
            max_value_per_unit_cents=row.max_value_per_unit_cents, client_fee_cents=row.client_fee_cents)
    return engine.VoucherOnFile(row.voucher_id, terms, utc(row.revoked_at), row.revoked_from, bool(row.carry_over))


def approval_of(r) -> domain.ApprovalState:  # noqa: ANN001
    return domain.ApprovalState(approval_id=r.approval_id, approved_at=utc(r.approved_at), status=r.status,
                                not_in_force_from=r.not_in_force_from, changed_at=utc(r.status_changed_at),
                                reason=r.status_reason)


def price_list_of(r) -> domain.PriceList:  # noqa: ANN001
    return domain.PriceList(price_list_id=r.price_list_id, effective_from=r.effective_from,
                            published_at=utc(r.published_at), unit_price_cents=r.unit_price_cents,
                            tariffs={k: int(v) for k, v in (r.tariffs or {}).items()})


class _Statements:
    """The batch's statements for one dialect: ``= ANY(array)`` on PostgreSQL, ``IN (...)`` elsewhere."""

    def __init__(self, postgresql: bool):
        self.postgresql = postgresql

    def among(self, column, name: str):  # noqa: ANN001, ANN201
        if self.postgresql:
            return column == any_(bindparam(name, type_=ARRAY(String)))
        return column.in_(bindparam(name, expanding=True))

    def codes(self):  # noqa: ANN201
        return select(_V.c.voucher_id, _V.c.provider_id, _V.c.voucher_code).where(
            self.among(_V.c.voucher_code, "codes"))

    def choices_of_provider(self):  # noqa: ANN201
        return select(_CH.c.voucher_id).where(self.among(_CH.c.voucher_id, "vids"),
                                              _CH.c.provider_id == bindparam("pid")).distinct()

    def lock(self):  # noqa: ANN201
        """The vouchers' write locks, taken in the order of their ids, and their rows. The lock also moves each
        row to a new version: a single charge that read a voucher without a lock (``fast_path``) writes only if
        the row is still the version it read, so a batch charging the voucher meanwhile must change it (a bare
        ``FOR UPDATE`` leaves ``xmin`` as it was, and the single charge would then count units without this
        batch's)."""
        if self.postgresql:
            locked = (select(_V.c.voucher_id).where(self.among(_V.c.voucher_id, "vids")).order_by(_V.c.voucher_id)
                      .with_for_update().cte("locked"))
            return (update(_V).where(_V.c.voucher_id == locked.c.voucher_id).values(version=_V.c.version + 1)
                    .returning(*_V.c))
        # SQLite: a write takes the database's write lock at once (a read would only upgrade to it later)
        return (update(_V).where(self.among(_V.c.voucher_id, "vids")).values(version=_V.c.version + 1)
                .returning(*_V.c))

    def earlier(self):  # noqa: ANN201
        columns = (_C.c.id, _C.c.provider_reference, _C.c.voucher_id, _C.c.service_date, _C.c.units_x100,
                   _C.c.tariff, _C.c.unit_price_cents)
        if self.postgresql:
            # joined to the references (one probe of the reference's unique index each): with ``= ANY`` a
            # cached generic plan scans all of the provider's charges against the whole array
            refs = func.unnest(bindparam("refs", type_=ARRAY(String))).table_valued("ref").render_derived()
            return select(*columns).select_from(_C.join(refs, and_(
                _C.c.provider_id == bindparam("pid"), _C.c.provider_reference == refs.c.ref)))
        return select(*columns).where(_C.c.provider_id == bindparam("pid"),
                                      self.among(_C.c.provider_reference, "refs"))

    def used_per_day(self):  # noqa: ANN201
        return (select(_C.c.voucher_id, _C.c.service_date, func.sum(_C.c.units_x100 - _C.c.corrected_units_x100),
                       func.sum(_C.c.amount_cents - _C.c.corrected_amount_cents))
                .where(self.among(_C.c.voucher_id, "vids"), _C.c.status != domain.CANCELLED,
                       _C.c.service_date >= bindparam("first", type_=_C.c.service_date.type),
                       _C.c.service_date <= bindparam("last", type_=_C.c.service_date.type))
                .group_by(_C.c.voucher_id, _C.c.service_date))

    def approvals(self):  # noqa: ANN201
        return select(_A).where(_A.c.provider_id == bindparam("pid"), self.among(_A.c.funder_id, "fids"))

    def price_lists(self):  # noqa: ANN201
        return select(_P.c.price_list_id, _P.c.funder_id, _P.c.category, _P.c.effective_from, _P.c.published_at,
                      _P.c.unit_price_cents, _P.c.tariffs).where(
            _P.c.provider_id == bindparam("pid"), self.among(_P.c.funder_id, "fids"))

    def deadlines(self):  # noqa: ANN201
        return select(_F.c.funder_id, _F.c.charge_deadline_days).where(self.among(_F.c.funder_id, "fids"))

    def choices(self):  # noqa: ANN201
        return select(_CH.c.voucher_id, _CH.c.provider_id, _CH.c.effective_from, _CH.c.chosen_at).where(
            self.among(_CH.c.voucher_id, "vids"))


_STATEMENTS = {True: _Statements(True), False: _Statements(False)}


#: the days a batch's units are read for (the engine's: its chunks ruled ahead compare the same days)
days_asked = engine.days_asked


class SessionChargeStore:
    """``engine.ChargeStore`` on a session inside its transaction."""

    def __init__(self, session: AsyncSession, events: AcceptedEvents = SINGLE):
        self.session, self.events = session, events
        self.stm = _STATEMENTS[session.bind.dialect.name == "postgresql"]

    async def _all(self, stmt, params: dict) -> list:  # noqa: ANN001
        return (await self.session.execute(stmt, params)).all()

    #: ``load`` takes what the batch before knew (``engine.Known``)
    carries = True

    async def load(self, provider_id: str, lines: list[engine.Line],
                   known: engine.Known | None = None) -> engine.ChargeState:
        state = engine.ChargeState()
        by_code = state.codes = await self._codes(provider_id, lines)
        for line in lines:
            vid = line.voucher_id if line.voucher_id is not None else by_code.get(
                codes.normalise(line.voucher_code) or "")
            if vid is not None:
                state.voucher_of[line.index] = vid
        if not state.voucher_of:
            return state
        vids = sorted(set(state.voucher_of.values()))
        for r in await self._all(self.stm.lock(), {"vids": vids}):
            state.vouchers[r.voucher_id] = voucher_on_file(r)
            state.versions[r.voucher_id] = r.version
        refs = sorted({line.provider_reference for line in lines if line.index in state.voucher_of})
        state.earlier = {r.provider_reference: engine.Earlier(r.id, r.voucher_id, r.service_date, r.units_x100,
                                                              r.tariff, r.unit_price_cents)
                         for r in await self._all(self.stm.earlier(), {"pid": provider_id, "refs": refs})}
        days = state.used_range = days_asked(lines, state)
        if days is not None:
            unread = self._known_used(state, known, vids, days)
            if unread:
                for vid, day, units, money in await self._all(self.stm.used_per_day(), {
                        "vids": unread, "first": days[0], "last": days[1]}):
                    state.used.add_day(vid, day, int(units), int(money))
        funders = sorted({v.terms.funder_id for v in state.vouchers.values() if v.terms is not None})
        if funders:
            await self._funders(state, provider_id, funders)
        for r in await self._all(self.stm.choices(), {"vids": vids}):
            state.choices.setdefault(r.voucher_id, []).append(
                lifecycle.Choice(r.provider_id, r.effective_from, utc(r.chosen_at)))
        return state

    @staticmethod
    def _known_used(state: engine.ChargeState, known: engine.Known | None, vids: list[str], days: tuple) -> list[str]:
        """The units and money per service date of the vouchers the batch before knew whole over ``days``, whose
        rows nothing but this batch's lock has moved since (the version it left them at, plus one: a charge,
        another batch's lock, a cancellation or a correction of any of their charges would have moved it too),
        taken from ``known`` into ``state.used``; the vouchers of ``vids`` (sorted) whose sums must be read."""
        if known is None or not (known.used_range[0] <= days[0] and days[1] <= known.used_range[1]):
            return vids
        unread = []
        first, last = days
        for vid in vids:
            before, version = known.versions.get(vid), state.versions.get(vid)
            if before is None or version is None or version != before + 1:
                unread.append(vid)
                continue
            its = {d: [u, m] for d, (u, m) in known.days.get(vid, {}).items() if first <= d <= last}
            if its:
                state.used.days[vid] = its
        return unread

    async def _codes(self, provider_id: str, lines: list[engine.Line]) -> dict[str, str]:
        """Code -> voucher for the codes the lines name that this provider may use: only a provider the
        client chose (now, or before a switch) finds a voucher by its code."""
        asked = sorted({c for c in (codes.normalise(line.voucher_code) for line in lines if line.voucher_id is None)
                        if c is not None})
        if not asked:
            return {}
        found: dict[str, list] = {}
        for voucher_id, chosen, code in await self._all(self.stm.codes(), {"codes": asked}):
            found.setdefault(code, []).append((voucher_id, chosen))
        single = {code: views[0] for code, views in found.items() if len(views) == 1}
        others = sorted({vid for vid, chosen in single.values() if chosen != provider_id})
        chose_me = set((await self.session.execute(self.stm.choices_of_provider(), {
            "vids": others, "pid": provider_id})).scalars().all()) if others else set()
        return {code: vid for code, (vid, chosen) in single.items() if chosen == provider_id or vid in chose_me}

    async def _funders(self, state: engine.ChargeState, provider_id: str, funders: list[str]) -> None:
        state.deadlines = {f: d for f, d in await self._all(self.stm.deadlines(), {"fids": funders})}
        for r in await self._all(self.stm.approvals(), {"pid": provider_id, "fids": funders}):
            state.approvals[(r.funder_id, r.category)] = approval_of(r)
        for r in await self._all(self.stm.price_lists(), {"pid": provider_id, "fids": funders}):
            state.price_lists.setdefault((r.funder_id, r.category), []).append(price_list_of(r))

    async def add(self, principal: Principal, charges: list[engine.NewCharge]) -> None:
        rows = ChargeRows(principal, charges, self.events)
        driver = None
        if self.stm.postgresql:  # COPY on the session's own connection, inside the transaction it began
            raw = await (await self.session.connection()).get_raw_connection()
            driver = raw.driver_connection
        for table, columns, records in rows.tables():
            if driver is not None:
                await driver.copy_records_to_table(table.name, records=records, columns=columns)
            else:
                await self.session.execute(table.insert(), [dict(zip(columns, r)) for r in records])
        wake_relay_on_commit(self.session)

    @property
    def streams(self) -> bool:
        """Whether ``add_stream`` can take the charges as the rules accept them (``COPY``, on PostgreSQL)."""
        return self.stm.postgresql

    async def add_stream(self, principal: Principal, charges: Iterator[engine.NewCharge]) -> None:
        """``add`` of charges given one at a time as the rules accept them (``engine.charge_lines``), on
        PostgreSQL: the rules run while ``COPY`` takes the charges' rows, and each table's rows are made while
        PostgreSQL writes the previous table's (``COPY`` sends its rows every 512 KiB as they are made), so the
        database's work and the process's overlap instead of taking turns. The rows are ``ChargeRows``' own.
        The iterator is read to its end (the rules' outcomes with it) even when no line is accepted."""
        first = next(charges, None)
        if first is None:
            return
        raw = await (await self.session.connection()).get_raw_connection()
        driver = raw.driver_connection
        rows = ChargeRows(principal, [], self.events)
        accepted: list[engine.NewCharge] = []
        v1 = self.events.v1
        v2 = V2Rows(self.events.per_event) if self.events.v2 else None

        def charge_rows() -> Iterator[tuple]:
            for c in chain((first,), charges):
                accepted.append(c)
                yield charge_row(c)

        def entries() -> Iterator[tuple]:  # the events and audit rows made while the entries are written
            for txn, c in zip(rows.txns, accepted):
                yield from ChargeRows.entries_of(txn[0], c)
                if v1:
                    rows.outbox.append(ChargeRows.event(c))
                if v2 is not None:
                    v2.add(c)
                rows.audit.append(rows.audit_row(c))

        copy = driver.copy_records_to_table
        await copy(_C.name, records=charge_rows(), columns=CHARGE_COLUMNS)
        await copy(_T.name, records=(rows.txns.append(t) or t for t in map(ChargeRows.ledger, accepted)),
                   columns=TXN_COLUMNS)
        await copy(_E.name, records=entries(), columns=ENTRY_COLUMNS)
        if v2 is not None:
            rows.outbox += v2.rows()
        await _lz4_bodies(driver)
        await copy(OUTBOX.name, records=rows.outbox, columns=OUTBOX_COLUMNS)
        await copy(audit.T.name, records=rows.audit, columns=AUDIT_COLUMNS)
        wake_relay_on_commit(self.session)


#: whether the server compresses large values with lz4 (None: not asked yet)
_LZ4: list[bool | None] = [None]


async def _lz4_bodies(driver) -> None:  # noqa: ANN001  (asyncpg connection, inside the batch's transaction)
    """The batch's large outbox bodies (a ``ChargesAccepted`` of 1,000 charges is ~420 kB of JSON) compressed with
    lz4 instead of the server's default pglz, for this transaction only (``SET LOCAL``), where the server has lz4:
    pglz took about 1 s of PostgreSQL's CPU per 100,000 charges' bodies here, lz4 about 0.2-0.3 s; the stored
    and read text is the same."""
    if _LZ4[0] is None:
        _LZ4[0] = bool(await driver.fetchval(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"))
    if _LZ4[0]:
        await driver.execute("SET LOCAL default_toast_compression = lz4")


class SessionChargeUnitOfWork(SessionUnitOfWork):
    """One transaction whose store is a ``SessionChargeStore`` (announcing its charges as ``events`` says)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], events: AcceptedEvents = SINGLE):
        super().__init__(sessions)
        self.events = events

    async def _begin(self) -> None:
        await super()._begin()
        self.charges = SessionChargeStore(self.session, self.events)


def retryable(exc: BaseException) -> bool:
    """A batch worth running again whole: a deadlock or serialisation failure, a twin of one of its provider
    references that a concurrent request committed after the batch read the earlier charges (its insert then
    fails on the reference's unique key; the next run reads the twin), or a pooled connection the server had
    dropped (the pool does not ping; nothing of the batch was committed)."""
    if isinstance(exc, IntegrityError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code in ("40P01", "40001", "23505") or "deadlock" in str(exc).lower()


async def run_batch(sessions: async_sessionmaker[AsyncSession], clock: Clock, principal: Principal,
                    provider_id: str, lines: list[engine.Line], events: AcceptedEvents = SINGLE,
                    ahead: engine.Ahead | None = None, carry: engine.Carry | None = None) -> dict[int, engine.Outcome]:
    """``engine.charge_lines`` in one transaction, run again whole (up to three times) when it meets a
    deadlock, a concurrent twin or a dropped connection. ``events``: how the accepted charges are announced
    (a single charge: its ``ChargeAccepted``; a bulk's chunk: payments' ``ACCEPTED_EVENTS``)."""
    for attempt in range(3):
        try:
            return await engine.charge_lines(SessionChargeUnitOfWork(sessions, events), clock, principal, provider_id,
                                             lines, ahead if attempt == 0 else None, carry)
        except Exception as e:  # noqa: BLE001  (DBAPIError, or asyncpg's own from COPY)
            if attempt == 2 or not retryable(e):
                raise
            log.info("charges.batch_again", provider_id=provider_id, lines=len(lines), error=type(e).__name__)
    raise AssertionError("unreachable")
