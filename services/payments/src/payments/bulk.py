"""Set-based bulk intake: one chunk of charge lines in one transaction with a handful of statements,
and exactly the rules, reasons and per-line answers of ``usecases.accept_charge``.

Per chunk:

1. the vouchers named by code are found (one statement, and one for the provider choices that let
   a provider other than the chosen one find a code);
2. the chunk's vouchers are locked in one statement, in the order of their ids (two bulks, or a bulk
   and single charges, queue up on the same rows without deadlocking);
3. after the lock (new statements, so a snapshot that sees every charge committed before), what the
   rules need is read together: earlier charges with the lines' provider references, the units and
   money already charged per voucher and service date, the approvals with their life cycle, the
   price lists, the choice history;
4. each line runs through the pure rules (``domain.validate_charge`` and ``lifecycle``, the same
   functions and in the same order as ``accept_charge``), line after line in memory: what a line
   accepts counts for the later lines of its voucher, a provider reference accepted earlier in the
   chunk answers ``repeated`` (or ``duplicate_reference``) to a later line;
5. the accepted charges, their ledger transactions and entries, the ``ChargeAccepted`` outbox rows
   (bodies written straight from the values, ``outbox.DirectEventRows``) and the audit rows go in with
   one statement per table: ``COPY`` on PostgreSQL (on the session's own connection, inside its
   transaction), multi-row inserts elsewhere.

A twin of a line's provider reference committed by a concurrent request after step 3 makes the
charge's insert fail on the reference's unique key: the caller runs the chunk again (nothing of it
was committed), and the second run reads the twin as an earlier charge, as a single charge would.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Callable

from sqlalchemy import String, and_, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared import audit, codes, periods
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import ChargeAccepted
from seteli_shared.ids import new_id
from seteli_shared.money import from_hundredths, to_hundredths
from seteli_shared.outbox import T as OUTBOX
from seteli_shared.outbox import DirectEventRows, wake_relay_on_commit

from . import domain, lifecycle, usecases
from .models import (ApprovalView, Charge, FunderView, LedgerEntry, LedgerTransaction, PriceListView,
                     ProviderChoiceView, VoucherView)

_V = VoucherView.__table__
_C = Charge.__table__
_A = ApprovalView.__table__
_P = PriceListView.__table__
_CH = ProviderChoiceView.__table__
_LT = LedgerTransaction.__table__
_LE = LedgerEntry.__table__
_F = FunderView.__table__

#: the columns of a new charge, in this order (the others start NULL, as ``accept_charge`` leaves them)
CHARGE_COLUMNS = ("id", "voucher_id", "funder_id", "provider_id", "category", "provider_reference", "service_date",
                  "units_x100", "unit_price_cents", "amount_cents", "own_share_cents", "tariff", "price_registered",
                  "registered_price_cents", "price_list_id", "client_fee_cents", "status", "accepted_at")
TXN_COLUMNS = ("id", "kind", "reference", "created_at")
ENTRY_COLUMNS = ("transaction_id", "account", "amount_cents")
OUTBOX_COLUMNS = ("message_id", "routing_key", "body", "created_at", "attempts")
AUDIT_COLUMNS = ("at", "channel", "actor", "roles", "actor_tenant", "action", "resource_type", "resource_id",
                 "funder_id", "correlation_id")


def code_not_found() -> NotFound:
    """What ``intake.voucher_by_code`` refuses a code with."""
    return NotFound("voucher", retryable=True, hint="check the voucher code with the client; a voucher issued "
                    "or chosen moments ago may not have reached payments yet")


@dataclass(frozen=True)
class Wanted:
    """A line that passed its field checks: its position in the chunk and what it asks."""

    index: int
    voucher_id: str | None
    voucher_code: str | None
    provider_reference: str
    req: domain.ChargeRequest


@dataclass(frozen=True)
class _Earlier:
    """What a repeated line is compared with: a charge with the same provider reference."""

    id: str
    voucher_id: str
    service_date: date
    units_x100: int
    tariff: str | None
    unit_price_cents: int


@dataclass
class Outcome:
    """A line's answer: accepted or repeated with its charge, or refused with the rules' reason."""

    status: str
    charge_id: str | None = None
    reason: str | None = None
    details: dict | None = None


def _utc(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=timezone.utc) if at is not None and at.tzinfo is None else at


class _Statements:
    """The chunk's statements for one dialect: ``= ANY(array)`` on PostgreSQL, ``IN (...)`` elsewhere."""

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
        """The vouchers' write locks, taken in the order of their ids, and their rows."""
        if self.postgresql:
            return (select(*_V.c).where(self.among(_V.c.voucher_id, "vids")).order_by(_V.c.voucher_id)
                    .with_for_update())
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
                .where(self.among(_C.c.voucher_id, "vids"), _C.c.status != usecases.CANCELLED,
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


class _Used:
    """Units and money charged per voucher and service date (not cancelled), and the sums per period
    asked for so far; a charge accepted in the chunk adds to both."""

    def __init__(self) -> None:
        self.days: dict[str, dict[date, list[int]]] = {}
        self.periods: dict[str, dict[tuple[date, date], list[int]]] = {}

    def add_day(self, voucher_id: str, day: date, units: int, money: int) -> None:
        sums = self.days.setdefault(voucher_id, {}).setdefault(day, [0, 0])
        sums[0] += units
        sums[1] += money

    def period(self, voucher_id: str, start: date, end: date) -> list[int]:
        cached = self.periods.setdefault(voucher_id, {})
        sums = cached.get((start, end))
        if sums is None:
            days = self.days.get(voucher_id, {})
            sums = [sum(v[0] for d, v in days.items() if start <= d <= end),
                    sum(v[1] for d, v in days.items() if start <= d <= end)]
            cached[(start, end)] = sums
        return sums

    def accept(self, voucher_id: str, day: date, units: int, money: int) -> None:
        self.add_day(voucher_id, day, units, money)
        for (start, end), sums in self.periods.get(voucher_id, {}).items():
            if start <= day <= end:
                sums[0] += units
                sums[1] += money



async def charge_chunk(session: AsyncSession, clock: Clock, principal: Principal, provider_id: str,
                       wanted: list[Wanted]) -> dict[int, Outcome]:
    """Charge the chunk's lines in the session's transaction: each line's outcome by its index."""
    if not wanted:
        return {}
    stm = _STATEMENTS[session.bind.dialect.name == "postgresql"]
    out: dict[int, Outcome] = {}

    # 1. the vouchers named by code (as intake.voucher_by_code finds them)
    canonical = {w.index: codes.normalise(w.voucher_code) for w in wanted if w.voucher_id is None}
    by_code: dict[str, str] = {}
    asked = sorted({c for c in canonical.values() if c is not None})
    if asked:
        found: dict[str, list] = {}
        for voucher_id, chosen, code in (await session.execute(stm.codes(), {"codes": asked})).all():
            found.setdefault(code, []).append((voucher_id, chosen))
        single = {code: views[0] for code, views in found.items() if len(views) == 1}
        others = sorted({vid for vid, chosen in single.values() if chosen != provider_id})
        chose_me = set((await session.execute(stm.choices_of_provider(), {"vids": others, "pid": provider_id})
                        ).scalars().all()) if others else set()
        by_code = {code: vid for code, (vid, chosen) in single.items() if chosen == provider_id or vid in chose_me}
    voucher_of: dict[int, str] = {}
    for w in wanted:
        vid = w.voucher_id if w.voucher_id is not None else by_code.get(canonical[w.index] or "")
        if vid is None:
            out[w.index] = _refused(code_not_found())
        else:
            voucher_of[w.index] = vid
    if not voucher_of:
        return out

    # 2. the vouchers' locks, in the order of their ids
    vids = sorted(set(voucher_of.values()))
    views = {row.voucher_id: row for row in (await session.execute(stm.lock(), {"vids": vids})).all()}

    # 3. everything the rules read, after the lock
    refs = sorted({w.provider_reference for w in wanted if w.index in voucher_of})
    earlier: dict[str, _Earlier] = {
        r.provider_reference: _Earlier(r.id, r.voucher_id, r.service_date, r.units_x100, r.tariff, r.unit_price_cents)
        for r in (await session.execute(stm.earlier(), {"pid": provider_id, "refs": refs})).all()}
    terms_of = {vid: usecases._terms(view) for vid, view in views.items()}
    funders = sorted({t.funder_id for t in terms_of.values() if t is not None})
    first_day = last_day = None
    for w in wanted:
        terms = terms_of.get(voucher_of.get(w.index))
        if terms is None:
            continue
        start, end = domain.period_bounds(terms, w.req.service_date)
        previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, w.req.service_date)
        if previous is not None:
            start = min(start, previous[0])
        first_day = start if first_day is None else min(first_day, start)
        last_day = end if last_day is None else max(last_day, end)
    used = _Used()
    if first_day is not None:
        for vid, day, units, money in (await session.execute(stm.used_per_day(), {
                "vids": vids, "first": first_day, "last": last_day})).all():
            used.add_day(vid, day, int(units), int(money))
    approvals: dict[tuple[str, str], domain.ApprovalState] = {}
    lists: dict[tuple[str, str], list[domain.PriceList]] = {}
    deadlines: dict[str, int | None] = {}
    if funders:
        deadlines = dict((await session.execute(stm.deadlines(), {"fids": funders})).all())
        for r in (await session.execute(stm.approvals(), {"pid": provider_id, "fids": funders})).all():
            approvals[(r.funder_id, r.category)] = domain.ApprovalState(
                approval_id=r.approval_id, approved_at=_utc(r.approved_at), status=r.status,
                not_in_force_from=r.not_in_force_from, changed_at=_utc(r.status_changed_at), reason=r.status_reason)
        for r in (await session.execute(stm.price_lists(), {"pid": provider_id, "fids": funders})).all():
            lists.setdefault((r.funder_id, r.category), []).append(domain.PriceList(
                price_list_id=r.price_list_id, effective_from=r.effective_from, published_at=_utc(r.published_at),
                unit_price_cents=r.unit_price_cents, tariffs={k: int(v) for k, v in (r.tariffs or {}).items()}))
    choices: dict[str, list[lifecycle.Choice]] = {}
    for r in (await session.execute(stm.choices(), {"vids": vids})).all():
        choices.setdefault(r.voucher_id, []).append(lifecycle.Choice(r.provider_id, r.effective_from,
                                                                     _utc(r.chosen_at)))

    # 4. the rules, line after line
    today = clock.today()
    rows = _Rows()
    for w in wanted:
        vid = voucher_of.get(w.index)
        if vid is None:
            continue
        try:
            out[w.index] = _one(w, vid, views.get(vid), terms_of.get(vid), earlier, used, approvals, lists,
                                choices, today, clock.now, principal, rows, deadlines)
        except DomainError as e:
            out[w.index] = _refused(e)

    # 5. the accepted lines' rows, one statement per table
    if rows.charges:
        await rows.insert(session)
        wake_relay_on_commit(session)
    return out


def _refused(e: DomainError) -> Outcome:
    return Outcome("refused", reason=e.reason, details={k: v for k, v in e.details.items() if k != "hint"} or None)


def _one(w: Wanted, voucher_id: str, view, terms: domain.VoucherTerms | None,  # noqa: ANN001
         earlier: dict[str, _Earlier], used: _Used, approvals: dict, lists: dict, choices: dict, today: date,
         now: Callable[[], datetime], principal: Principal, rows: "_Rows",
         deadlines: dict[str, int | None] | None = None) -> Outcome:
    """One line, as ``usecases.accept_charge`` takes it (same checks in the same order)."""
    req = w.req
    category = None if terms is None else domain.charge_category(terms, req.category)
    before = earlier.get(w.provider_reference)
    if before is not None:
        same = (before.voucher_id, before.service_date, before.units_x100, before.tariff) == (
            voucher_id, req.service_date, req.units_x100, req.tariff) and req.unit_price_cents in (
            None, before.unit_price_cents)
        if not same:
            raise Conflict("duplicate_reference", "this provider reference was already used for another charge",
                           charge_id=before.id)
        return Outcome("repeated", charge_id=before.id)
    units_used = money_used = 0
    approval = None
    price_lists: list[domain.PriceList] = []
    if terms is not None:
        start, end = domain.period_bounds(terms, req.service_date)
        units_used, money_used = used.period(voucher_id, start, end)
        previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, req.service_date)
        previous_used = used.period(voucher_id, *previous)[0] if previous is not None else 0
        approval = approvals.get((terms.funder_id, category))
        price_lists = [p for p in lists.get((terms.funder_id, category), ()) if p.effective_from <= req.service_date]
        terms = usecases._life_cycle_terms(view, terms, req, today, choices.get(voucher_id, []), previous_used)
    amounts = domain.validate_charge(terms, approval, units_used, req, today, price_lists,
                                     money_used_cents=money_used,
                                     charge_deadline_days=(deadlines or {}).get(terms.funder_id) if terms else None)
    at = now()
    charge_id = new_id()
    rows.add(principal, charge_id, voucher_id, terms.funder_id, category, w.provider_reference, req, amounts, at)
    used.accept(voucher_id, req.service_date, req.units_x100, amounts.amount_cents)
    earlier[w.provider_reference] = _Earlier(charge_id, voucher_id, req.service_date, req.units_x100, req.tariff,
                                             amounts.unit_price_cents)
    return Outcome("accepted", charge_id=charge_id)


class _Rows:
    """The rows of the chunk's accepted charges, per table."""

    def __init__(self) -> None:
        self.charges: list[tuple] = []
        self.txns: list[tuple] = []
        self.entries: list[tuple] = []
        self.outbox: list[tuple] = []
        self.audit: list[tuple] = []
        #: the ``ChargeAccepted`` rows, their bodies written straight from the values (``DirectEventRows``)
        self.events = DirectEventRows(ChargeAccepted, usecases.SOURCE)
        self._audit: tuple | None = None

    def add(self, principal: Principal, charge_id: str, voucher_id: str, funder_id: str, category: str,
            reference: str, req: domain.ChargeRequest, a: domain.ChargeAmounts, at: datetime) -> None:
        self.charges.append((
            charge_id, voucher_id, funder_id, req.provider_id, category, reference, req.service_date, req.units_x100,
            a.unit_price_cents, a.amount_cents, a.own_share_cents, req.tariff, a.price_registered,
            a.registered_price_cents, a.price_list_id, a.client_fee_cents, domain.ACCEPTED, at))
        txn_id = new_id()
        self.txns.append((txn_id, "charge", charge_id, at))
        self.entries += [(txn_id, account, amount) for account, amount in
                         domain.charge_postings(funder_id, req.provider_id, a.amount_cents)]
        row = self.events.row({
            "charge_id": charge_id, "voucher_id": voucher_id, "funder_id": funder_id, "provider_id": req.provider_id,
            "category": category, "service_date": req.service_date, "units": from_hundredths(req.units_x100),
            "unit_price_cents": a.unit_price_cents, "amount_cents": a.amount_cents,
            "own_share_cents": a.own_share_cents, "accepted_at": at, "tariff": req.tariff,
            "price_registered": a.price_registered, "registered_price_cents": a.registered_price_cents,
            "price_list_id": a.price_list_id, "client_fee_cents": a.client_fee_cents})
        self.outbox.append((row["message_id"], row["routing_key"], row["body"], row["created_at"], 0))
        if self._audit is None:  # the same actor, action and correlation for every charge of the chunk
            record = audit.row(principal, "charge.create", "charge", charge_id, funder_id)
            self._audit = tuple(record[k] for k in AUDIT_COLUMNS)
            self.audit.append(self._audit)
            return
        _at, channel, actor, roles, tenant, action, rtype, _rid, _fid, correlation = self._audit
        self.audit.append((datetime.now(timezone.utc), channel, actor, roles, tenant, action, rtype, charge_id,
                           funder_id, correlation))

    def tables(self) -> list[tuple]:
        # the ledger transactions before their entries (the entries' foreign key)
        return [(_C, CHARGE_COLUMNS, self.charges), (_LT, TXN_COLUMNS, self.txns), (_LE, ENTRY_COLUMNS, self.entries),
                (OUTBOX, OUTBOX_COLUMNS, self.outbox), (audit.T, AUDIT_COLUMNS, self.audit)]

    async def insert(self, session: AsyncSession) -> None:
        driver = None
        if session.bind.dialect.name == "postgresql":
            conn = await session.connection()
            raw = await conn.get_raw_connection()
            driver = getattr(raw, "driver_connection", None)
            # COPY only inside the transaction SQLAlchemy began (the lock statement began it)
            if driver is None or not hasattr(driver, "copy_records_to_table") or not driver.is_in_transaction():
                driver = None
        for table, columns, records in self.tables():
            if driver is not None:
                await driver.copy_records_to_table(table.name, records=records, columns=columns)
            else:
                await session.execute(table.insert(), [dict(zip(columns, r)) for r in records])


def wanted_of(index: int, c, provider_id: str) -> Wanted:  # noqa: ANN001  (intake.ChargeLine)
    """The line's request, as the single charge builds it."""
    return Wanted(index, c.voucher_id, c.voucher_code, c.provider_reference, domain.ChargeRequest(
        provider_id, c.service_date, to_hundredths(c.units), c.unit_price_cents, c.tariff,
        c.category.value if c.category else None))
