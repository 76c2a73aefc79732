"""Folding events into the read models, a batch at a time. Every event is first archived.

``fold`` takes a run of events (any types, in any order) and changes the read models in the caller's
transaction with a few statements per batch: the facts the batch touches are read once, the events
applied to them in memory, then the changed facts written back and the sums added by one upsert per
table. The fold is order-independent: folding the same events in another order (a redelivery that
arrives late, a rebuild from the archive) gives the same rows, because

- facts are keyed by their own ids and each half of a charge (accepted, settled, cancelled) is
  applied once, the sums being added when the halves that need each other are both there;
- sums are additions (and one maximum), which commute;
- a voucher's terms and revocation keep the highest decision version.

The inbox (in the consumer, same transaction) makes a redelivered event change nothing.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime, timedelta
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.events import (AcceptedCharge, ChargeAccepted, ChargeCancelled, ChargeCorrected, ChargesAccepted,
                                  ChargeSettled, ChargesSettled, Envelope, Event,
                                  PriceListPublished, ProviderApproved, ProviderReinstated, ProviderRevoked,
                                  ProviderSuspended, SettlementCreated, VoucherAmended, VoucherExpired, VoucherIssued,
                                  VoucherProviderChosen, VoucherRevoked, VouchersIssued)
from seteli_shared.logging import get_logger
from seteli_shared.money import to_hundredths

from .models import (ApprovalChange, CategoryMonth, ChargeFact, ClientMonth, ClientTotalMonth, FunderFigures,
                     FunderMember, FunderMonth, PriceListFact, ProviderChoice, ProviderMonth, ReceivedEvent, SwitchMonth,
                     VoucherFact, VoucherMonth)

log = get_logger(__name__)
SETTLEMENT_GUARANTEE = timedelta(days=14)


def month(d: date | datetime) -> str:
    return f"{d.year:04d}-{d.month:02d}"


# ------------------------------------------------------------------ statements that work on both databases
def _insert(session: AsyncSession, table: sa.Table):  # noqa: ANN202
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _pg_array_type(col: sa.Column) -> str:
    t = col.type
    if isinstance(t, sa.types.TypeDecorator):
        t = t.impl
    if isinstance(t, sa.BigInteger):
        return "bigint[]"
    if isinstance(t, sa.Integer):
        return "integer[]"
    if isinstance(t, sa.Boolean):
        return "boolean[]"
    if isinstance(t, sa.DateTime):
        return "timestamptz[]"
    if isinstance(t, sa.Date):
        return "date[]"
    return "text[]"


async def _pg_rows(session: AsyncSession, table: sa.Table, rows: list[dict[str, Any]], keys: list[str],
                   conflict: str, returning: str = "") -> Any:
    """PostgreSQL: the rows as one array per column, unnested into one INSERT (one round trip, no
    per-row statement building; ~10x the executemany path's speed for thousands of rows)."""
    names = list(rows[0])
    params = {f"c{i}": [r[n] for r in rows] for i, n in enumerate(names)}
    arrays = ", ".join(f"CAST(:c{i} AS {_pg_array_type(table.c[n])})" for i, n in enumerate(names))
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
    if keys:
        sql += f" ON CONFLICT ({', '.join(keys)}) {conflict}"
    if returning:
        sql += f" RETURNING {returning}"
    return await session.execute(sa.text(sql), params)


def _pg_set(table: sa.Table, names: list[str], keys: list[str], how: str, maxima: Iterable[str] = ()) -> str:
    parts = []
    for n in names:
        if n in keys:
            continue
        if how == "put":
            parts.append(f"{n} = EXCLUDED.{n}")
        elif n in maxima:
            parts.append(f"{n} = GREATEST({table.name}.{n}, EXCLUDED.{n})")
        else:
            parts.append(f"{n} = {table.name}.{n} + EXCLUDED.{n}")
    return "DO UPDATE SET " + ", ".join(parts)


async def rows_by_keys(session: AsyncSession, table: sa.Table, names: list[str], keys: list[tuple],
                       delete: bool = False) -> list[dict[str, Any]]:
    """The rows whose columns ``names`` equal one of ``keys`` (or delete them). On PostgreSQL the keys
    go as arrays joined by ``unnest`` (a long row-value IN list is planned as a scan)."""
    if not keys:
        return []
    if _pg(session):
        params = {f"k{i}": [k[i] for k in keys] for i in range(len(names))}
        arrays = ", ".join(f"CAST(:k{i} AS text[])" for i in range(len(names)))
        cols = ", ".join(f"k{i}" for i in range(len(names)))
        match = " AND ".join(f"t.{n} = x.k{i}" for i, n in enumerate(names))
        if delete:
            await session.execute(sa.text(f"DELETE FROM {table.name} t USING unnest({arrays}) AS x({cols}) "
                                          f"WHERE {match}"), params)
            return []
        result = await session.execute(sa.text(f"SELECT t.* FROM {table.name} t JOIN unnest({arrays}) AS x({cols}) "
                                               f"ON {match}"), params)
        return [dict(r) for r in result.mappings()]
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), 500):
        cond = sa.tuple_(*[table.c[n] for n in names]).in_(keys[i:i + 500])
        if delete:
            await session.execute(sa.delete(table).where(cond))
        else:
            out += [dict(r) for r in (await session.execute(sa.select(table).where(cond))).mappings()]
    return out


def _pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


async def add_sums(session: AsyncSession, model: type, rows: list[dict[str, Any]], keys: list[str],
                   maxima: Iterable[str] = (), returning: str = "") -> Any:
    """Insert the rows or add their values to the existing ones (``maxima``: keep the larger). PostgreSQL
    only: ``returning`` names columns of the rows after the change to return."""
    if not rows:
        return None
    table = model.__table__
    if _pg(session):
        return await _pg_rows(session, table, rows, keys, _pg_set(table, list(rows[0]), keys, "add", maxima),
                              returning=returning)
    stmt = _insert(session, table)
    sets = {}
    for name in rows[0]:
        if name in keys:
            continue
        col = table.c[name]
        if name in maxima:
            sets[name] = sa.case((stmt.excluded[name] > col, stmt.excluded[name]), else_=col)
        else:
            sets[name] = col + stmt.excluded[name]
    await session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=sets), rows)


async def put_rows(session: AsyncSession, model: type, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert the rows or replace the existing ones' values."""
    if not rows:
        return
    if _pg(session):
        table = model.__table__
        return await _pg_rows(session, table, rows, keys, _pg_set(table, list(rows[0]), keys, "put"))
    stmt = _insert(session, model.__table__)
    sets = {name: stmt.excluded[name] for name in rows[0] if name not in keys}
    await session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=sets), rows)


async def insert_new(session: AsyncSession, model: type, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if rows and _pg(session):
        await _pg_rows(session, model.__table__, rows, keys, "DO NOTHING")
    elif rows:
        await session.execute(_insert(session, model.__table__).on_conflict_do_nothing(index_elements=keys), rows)


#: charge facts read or rewritten per statement. A statement joining a batch's keys (~27,000 settled charges in a
#: 4 MB batch of ``charge.settled.v2``) to ``reporting_charge`` was planned on a fresh connection's first
#: executions as a hash join over a full scan of the table (1,000,000 rows at month-end: 1.6-2.7 s a batch,
#: growing with the table); in parts of this size the plan is the primary key's index whatever the table's size
#: (0.7-0.9 s for 20,000 facts of 1,000,000), bench/README.md
FACTS_PER_STATEMENT = 2000


@lru_cache(maxsize=None)
def _load_sql(table: str, key: str) -> str:
    return f"SELECT * FROM {table} WHERE {key} = ANY($1::text[])"


async def _load(session: AsyncSession, model: type, key: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    table = model.__table__
    out: dict[str, dict[str, Any]] = {}
    ordered = sorted(ids)
    if _pg(session):  # on the session's own asyncpg connection: its records are read as dicts at C speed, where
        # SQLAlchemy's rows and mappings cost ~50 us a fact of 20 columns (a fifth of a settled charge's fold)
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        for i in range(0, len(ordered), FACTS_PER_STATEMENT):
            records = await driver.fetch(_load_sql(table.name, key), ordered[i:i + FACTS_PER_STATEMENT])
            out.update({r[key]: dict(r) for r in records})
        return out
    for i in range(0, len(ordered), 5000):
        result = await session.execute(sa.select(table).where(table.c[key].in_(ordered[i:i + 5000])))
        out.update({row[key]: dict(row) for row in result.mappings()})
    return out


@lru_cache(maxsize=None)
def _blank(model: type) -> dict[str, Any]:
    """A fact row with every column at its default (the same dict each time: copy it, never change it;
    working it out per new fact was a tenth of the fold's CPU)."""
    return {c.name: (0 if isinstance(c.type, (sa.Integer, sa.BigInteger)) and not c.nullable else
                     False if isinstance(c.type, sa.Boolean) else None) for c in model.__table__.columns}


# ------------------------------------------------------------------ a voucher's part of the monthly sums
def voucher_months(v: dict[str, Any] | None) -> dict[tuple, dict[str, int]]:
    """What a voucher, as known now, adds to the sums per (funder, month, category): issued in its month
    of issue, in force in each month of its validity that it was not revoked or expired before, expired
    and revoked in those events' months, and its units per month while in force (monthly vouchers).
    The fold adds the difference between this before and after a batch: the sums then depend on the
    vouchers' final state only, not on the order their events came in."""
    out: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if v is None or v["issued_on"] is None or v["valid_from"] is None:
        return out
    f, c = v["funder_id"], v["category"]
    out[(f, month(v["issued_on"]), c)]["vouchers_issued"] += 1
    if v["expired_on"] is not None:
        out[(f, month(v["expired_on"]), c)]["vouchers_expired"] += 1
    if v["revoked_from"] is not None:
        out[(f, month(v["revoked_from"]), c)]["vouchers_revoked"] += 1
    y, m = v["valid_from"].year, v["valid_from"].month
    for _ in range(240):
        first = date(y, m, 1)
        if first > v["valid_until"]:
            break
        if (v["revoked_from"] is None or v["revoked_from"] > first) and \
                (v["expired_on"] is None or v["expired_on"] >= first):
            cell = out[(f, f"{y:04d}-{m:02d}", c)]
            cell["vouchers_active"] += 1
            if v["period_kind"] == "month":
                cell["units_granted_x100"] += v["units_per_period_x100"]
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# ------------------------------------------------------------------ one batch
@dataclass
class Batch:
    """The state one batch works on, and what it will write."""

    charges: dict[str, dict[str, Any]]
    vouchers: dict[str, dict[str, Any]]
    changed_charges: set[str] = field(default_factory=set)
    #: each loaded charge fact as it was before the batch changed it (what ``write`` compares against)
    charges_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed_vouchers: set[str] = field(default_factory=set)
    cells: dict[tuple, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    usage: dict[tuple, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    figures: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    members: set[tuple[str, str, str]] = field(default_factory=set)
    price_lists: list[dict] = field(default_factory=list)
    approval_changes: list[dict] = field(default_factory=list)
    choices: list[dict] = field(default_factory=list)
    lowered_keys: set[tuple] = field(default_factory=set)
    lowered_cells: set[tuple] = field(default_factory=set)
    vouchers_before: dict[str, dict] = field(default_factory=dict)
    clients: dict[tuple, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    #: per (funder, month): distinct clients across categories; per (funder, month, category, provider)
    funder_months: dict[tuple, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    providers: dict[tuple, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    lowered_funder_months: set[tuple] = field(default_factory=set)
    lowered_providers: set[tuple] = field(default_factory=set)

    # ---- charges: each half once; the sums when the halves they need are there
    def charge(self, charge_id: str) -> dict[str, Any]:
        if charge_id not in self.charges:
            self.charges[charge_id] = {**_blank(ChargeFact), "charge_id": charge_id}
        elif charge_id not in self.changed_charges and charge_id not in self.charges_before:
            self.charges_before[charge_id] = dict(self.charges[charge_id])
        self.changed_charges.add(charge_id)
        return self.charges[charge_id]

    @staticmethod
    def _now(c: dict[str, Any]) -> tuple[int, int, int]:
        """The charge's units, amount and own share after any corrections."""
        def low(accepted: int, after: int | None) -> int:
            return accepted if after is None else min(accepted, after)
        return (low(c["units_x100"], c["units_after_x100"]), low(c["amount_cents"], c["amount_after_cents"]),
                low(c["own_share_cents"], c["own_share_after_cents"]))

    def _charged(self, c: dict[str, Any], sign: int, count: int = 1) -> None:
        units, amount, own = self._now(c)
        if sign < 0:  # sums may come back to zero: such rows are removed (a rebuild would not make them)
            self.lowered_keys.add((c["funder_id"], c["period"], c["category"], c["provider_id"], c["voucher_id"]))
            self.lowered_cells.add((c["funder_id"], c["period"], c["category"]))
        cell = self.cells[(c["funder_id"], c["period"], c["category"])]
        cell["charges"] += sign * count
        cell["units_x100"] += sign * units
        cell["charged_cents"] += sign * amount
        cell["own_share_cents"] += sign * own
        cell["priced_x100"] += sign * c["unit_price_cents"] * units
        self.clients[self._client_key(c)]["charges"] += sign * count
        use = self.usage[(c["funder_id"], c["period"], c["category"], c["provider_id"], c["voucher_id"])]
        use["charges"] += sign * count
        use["units_x100"] += sign * units
        use["charged_cents"] += sign * amount
        f = self.figures[c["funder_id"]]
        f["charges_accepted"] += sign * count
        f["units_charged_x100"] += sign * units
        f["charged_cents"] += sign * amount
        f["own_share_cents"] += sign * own

    def corrected(self, e: ChargeCorrected) -> None:
        """A settled charge corrected: it counts with its figures after the correction (the lowest any
        correction names, whatever order they arrive in); a full reversal leaves a charge of nothing."""
        c = self.charge(e.charge_id)
        counted = c["accepted_at"] is not None and not c["cancelled"]
        if counted:
            self._charged(c, -1, count=0)
        for col, value in (("units_after_x100", to_hundredths(e.units_after)),
                           ("amount_after_cents", e.amount_cents_after),
                           ("own_share_after_cents", e.own_share_cents_after)):
            c[col] = value if c[col] is None else min(c[col], value)
        if counted:
            self._charged(c, +1, count=0)

    def _settled(self, c: dict[str, Any]) -> None:
        funder_id, period, category = c["funder_id"], c["period"], c["category"]
        cell = self.cells[(funder_id, period, category)]
        delay = c["settled_at"] - c["accepted_at"]
        cell["settled_charges"] += 1
        cell["settled_gross_cents"] += c["gross_cents"]
        cell["fee_cents"] += c["fee_cents"]
        cell["net_cents"] += c["net_cents"]
        if delay <= SETTLEMENT_GUARANTEE:
            cell["settled_within_14_days"] += 1
        seconds = int(delay.total_seconds())
        if seconds > cell["worst_delay_seconds"]:
            cell["worst_delay_seconds"] = seconds
        voucher_id = c["voucher_id"]
        self.usage[(funder_id, period, category, c["provider_id"], voucher_id)]["settled_charges"] += 1
        v = self.vouchers.get(voucher_id)
        client = v["client_ref"] if v is not None and v["client_ref"] else f"voucher:{voucher_id}"
        self.clients[(funder_id, period, category, client)]["settled_charges"] += 1

    def _client_key(self, c: dict[str, Any]) -> tuple[str, str, str, str]:
        """(funder, month, category, client): the voucher's pseudonymous client, or ``voucher:<id>`` until
        reporting has seen the voucher's issue (then the row is moved to the client, see ``_clients``)."""
        v = self.vouchers.get(c["voucher_id"])
        client = v["client_ref"] if v is not None and v["client_ref"] else f"voucher:{c['voucher_id']}"
        return c["funder_id"], c["period"], c["category"], client

    def accepted(self, e: ChargeAccepted) -> None:
        self._accept(e, e.funder_id, e.provider_id)

    def accepted_many(self, e: ChargesAccepted) -> None:
        """A ``charge.accepted.v2``: each charge listed as the ``ChargeAccepted`` it stands for (read from the
        validated event's parts, no event built per charge)."""
        accept, funder_id, provider_id = self._accept, e.funder_id, e.provider_id
        for one in e.charges:
            accept(one, funder_id, provider_id)

    def _accept(self, e: ChargeAccepted | AcceptedCharge, funder_id: str, provider_id: str) -> None:
        c = self.charge(e.charge_id)
        if c["accepted_at"] is not None:
            return
        c.update(funder_id=funder_id, category=e.category, period=month(e.service_date), voucher_id=e.voucher_id,
                 provider_id=provider_id, units_x100=to_hundredths(e.units), unit_price_cents=e.unit_price_cents,
                 amount_cents=e.amount_cents, own_share_cents=e.own_share_cents, accepted_at=e.accepted_at)
        if not c["cancelled"]:
            self._charged(c, +1)
        if c["settled_at"] is not None:
            self._settled(c)

    def cancelled(self, e: ChargeCancelled) -> None:
        c = self.charge(e.charge_id)
        if c["cancelled"]:
            return
        c["cancelled"] = True
        if c["accepted_at"] is not None:
            self._charged(c, -1)

    def settled(self, e: ChargeSettled) -> None:
        self._settle(e.charge_id, e.funder_id, e.settled_at, e.gross_cents, e.fee_cents, e.net_cents)

    def settled_many(self, e: ChargesSettled) -> None:
        """A ``charge.settled.v2``: each charge listed as the ``ChargeSettled`` it stands for (read from the
        validated event's parts, no event built per charge)."""
        settle, funder_id, at = self._settle, e.funder_id, e.settled_at
        for one in e.charges:
            settle(one.charge_id, funder_id, at, one.gross_cents, one.fee_cents, one.net_cents)

    def _settle(self, charge_id: str, funder_id: str, settled_at: datetime, gross: int, fee: int, net: int) -> None:
        c = self.charge(charge_id)
        if c["settled_at"] is not None:
            return
        c["settled_at"], c["gross_cents"], c["fee_cents"], c["net_cents"] = settled_at, gross, fee, net
        f = self.figures[funder_id]
        f["charges_settled"] += 1
        f["settled_gross_cents"] += gross
        f["fee_cents"] += fee
        f["net_cents"] += net
        if c["accepted_at"] is not None:
            self._settled(c)

    # ---- vouchers: the terms of the highest decision version
    def voucher(self, voucher_id: str, funder_id: str, category: str) -> dict[str, Any]:
        if voucher_id not in self.vouchers_before:
            known = self.vouchers.get(voucher_id)
            self.vouchers_before[voucher_id] = voucher_months(known)
            self.vouchers_before[voucher_id]["_had_client"] = bool(known and known["client_ref"])
        if voucher_id not in self.vouchers:
            self.vouchers[voucher_id] = {**_blank(VoucherFact), "voucher_id": voucher_id}
        v = self.vouchers[voucher_id]
        v.update(funder_id=funder_id, category=category)
        self.changed_vouchers.add(voucher_id)
        return v

    def issued(self, e: VoucherIssued) -> None:
        v = self.voucher(e.voucher_id, e.funder_id, e.category)
        if v["issued_on"] is not None:
            return
        v.update(client_ref=e.client_ref, age_band=getattr(e, "age_band", None),
                 municipality=getattr(e, "municipality_of_residence", None), unit=e.unit, period_kind=e.period,
                 issued_on=e.issued_at.date())
        if v["terms_version"] < 1:
            v.update(terms_version=1, units_per_period_x100=to_hundredths(e.units_per_period),
                     valid_from=e.valid_from, valid_until=e.valid_until)
        self.figures[e.funder_id]["vouchers_issued"] += 1
        self.members.add((e.funder_id, "client", e.client_ref))

    def amended(self, e: VoucherAmended) -> None:
        v = self.voucher(e.voucher_id, e.funder_id, e.category)
        if e.decision_version > v["terms_version"]:
            v.update(terms_version=e.decision_version, units_per_period_x100=to_hundredths(e.units_per_period),
                     valid_from=e.valid_from, valid_until=e.valid_until, period_kind=e.period)

    def revoked(self, e: VoucherRevoked) -> None:
        v = self.voucher(e.voucher_id, e.funder_id, e.category)
        if e.decision_version > v["revoke_version"]:
            v.update(revoke_version=e.decision_version, revoked_from=e.effective_from)

    def expired(self, e: VoucherExpired) -> None:
        v = self.voucher(e.voucher_id, e.funder_id, e.category)
        day = e.expired_at.date()
        if v["expired_on"] is None or day < v["expired_on"]:
            v["expired_on"] = day

    # ---- facts keyed by the event
    def approval(self, env: Envelope, e: Event, kind: str, effective: date, at: datetime) -> None:
        self.approval_changes.append({"event_id": env.id, "approval_id": e.approval_id, "provider_id": e.provider_id,
                                      "funder_id": e.funder_id, "category": e.category, "kind": kind,
                                      "effective_from": effective, "at": at})

    def apply(self, env: Envelope, e: Event | None) -> None:
        if isinstance(e, ChargeAccepted):
            self.accepted(e)
        elif isinstance(e, ChargesAccepted):
            self.accepted_many(e)
        elif isinstance(e, ChargesSettled):
            self.settled_many(e)
        elif isinstance(e, ChargeSettled):
            self.settled(e)
        elif isinstance(e, ChargeCancelled):
            self.cancelled(e)
        elif isinstance(e, ChargeCorrected):
            self.corrected(e)
        elif isinstance(e, VoucherIssued):
            self.issued(e)
        elif isinstance(e, VouchersIssued):
            for one in e.each():  # each voucher listed as its ``VoucherIssued``: one heard in both counts once
                self.issued(one)
        elif isinstance(e, VoucherAmended):
            self.amended(e)
        elif isinstance(e, VoucherRevoked):
            self.revoked(e)
        elif isinstance(e, VoucherExpired):
            self.expired(e)
        elif isinstance(e, VoucherProviderChosen):
            self.figures[e.funder_id]["provider_choices"] += 1
            self.choices.append({"event_id": env.id, "funder_id": e.funder_id, "period": month(e.chosen_at),
                                 "category": e.category, "voucher_id": e.voucher_id, "provider_id": e.provider_id,
                                 "previous_provider_id": e.previous_provider_id})
        elif isinstance(e, ProviderApproved):
            self.figures[e.funder_id]["approvals"] += 1
            self.members.add((e.funder_id, "provider", e.provider_id))
            self.approval(env, e, "approved", e.approved_at.date(), e.approved_at)
        elif isinstance(e, ProviderSuspended):
            self.approval(env, e, "suspended", e.effective_from, e.suspended_at)
        elif isinstance(e, ProviderReinstated):
            self.approval(env, e, "reinstated", e.reinstated_at.date(), e.reinstated_at)
        elif isinstance(e, ProviderRevoked):
            self.approval(env, e, "revoked", e.effective_from, e.revoked_at)
        elif isinstance(e, PriceListPublished):
            self.price_lists.append({"price_list_id": e.price_list_id, "provider_id": e.provider_id,
                                     "funder_id": e.funder_id, "category": e.category, "unit": e.unit,
                                     "unit_price_cents": e.unit_price_cents, "effective_from": e.effective_from,
                                     "published_at": e.published_at})
        elif isinstance(e, SettlementCreated):
            self.figures[e.funder_id]["settlements"] += 1

    def _voucher_sums(self) -> None:
        for voucher_id, before in self.vouchers_before.items():
            after = voucher_months(self.vouchers[voucher_id])
            for key in (set(before) | set(after)) - {"_had_client"}:
                for name in set(before.get(key, {})) | set(after.get(key, {})):
                    delta = after.get(key, {}).get(name, 0) - before.get(key, {}).get(name, 0)
                    if delta:
                        self.cells[key][name] += delta
                        if delta < 0:
                            self.lowered_cells.add(key)

    async def _clients(self, session: AsyncSession) -> None:
        """Distinct clients with charges (and with settled charges) per funder, month and category: a row
        per client whose counters the batch changes; the cell's ``clients_served`` / ``clients_settled``
        change when a client's counter leaves or comes back to zero. Charges folded before their voucher's
        issue are kept under ``voucher:<id>`` and moved to the client when the issue arrives."""
        issued_now = {vid: v["client_ref"] for vid, v in self.vouchers.items()
                      if v["client_ref"] and vid in self.vouchers_before and
                      not self.vouchers_before[vid].get("_had_client")}
        for key in [k for k in self.clients if k[3].startswith("voucher:") and k[3][8:] in issued_now]:
            moved = self.clients.pop(key)
            target = self.clients[(*key[:3], issued_now[key[3][8:]])]
            for name, value in moved.items():
                target[name] += value
        t = ClientMonth.__table__
        if issued_now:  # rows of charges folded in earlier batches, before the voucher's issue
            waiting = (await session.execute(sa.select(t).where(
                t.c.client_key.in_(sorted(f"voucher:{vid}" for vid in issued_now))))).mappings().all()
            for r in waiting:
                src = (r["funder_id"], r["period"], r["category"], r["client_key"])
                dst = (*src[:3], issued_now[r["client_key"][8:]])
                for name in ("charges", "settled_charges"):
                    self.clients[src][name] -= r[name]
                    self.clients[dst][name] += r[name]
        await _count_clients(session, ClientMonth, ["funder_id", "period", "category", "client_key"], self.clients,
                             self.cells, self.lowered_cells)
        # the same across categories (the total row): a client's counters summed over its categories
        totals: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (f, p, _, client), values in self.clients.items():
            for name, value in values.items():
                totals[(f, p, client)][name] += value
        await _count_clients(session, ClientTotalMonth, ["funder_id", "period", "client_key"], totals,
                             self.funder_months, self.lowered_funder_months)

    async def _voucher_months(self, session: AsyncSession) -> None:
        """Add the batch's sums per voucher and month, and per provider and month its charges' sums and its
        clients: the vouchers whose charges in the month leave or come back to zero (on PostgreSQL the
        upsert returns each voucher month's charges after the change; elsewhere they are read before)."""
        names = ["funder_id", "period", "category", "provider_id", "voucher_id"]
        keys = sorted(k for k, v in self.usage.items() if any(v.values()))
        if not keys:
            return
        rows = _rows(self.usage, names, USAGE_SUMS)
        if _pg(session):
            result = await add_sums(session, VoucherMonth, rows, names, returning=", ".join(names) + ", charges")
            before = {tuple(r[:5]): r[5] - self.usage[tuple(r[:5])].get("charges", 0) for r in result.all()}
        else:
            before = {tuple(r[n] for n in names): r["charges"]
                      for r in await rows_by_keys(session, VoucherMonth.__table__, names, keys)}
            await add_sums(session, VoucherMonth, rows, names)
        for key in keys:
            use = self.usage[key]
            old = before.get(key, 0)
            cell = self.providers[key[:4]]
            cell["clients"] += (old + use.get("charges", 0) > 0) - (old > 0)
            for name in ("charges", "units_x100", "charged_cents"):
                cell[name] += use.get(name, 0)
        for key, cell in self.providers.items():
            if any(v < 0 for v in cell.values()):
                self.lowered_providers.add(key)

    async def write(self, session: AsyncSession) -> None:
        self._voucher_sums()
        await self._clients(session)
        await self._write_charges(session)
        await put_rows(session, VoucherFact, [self.vouchers[i] for i in sorted(self.changed_vouchers)], ["voucher_id"])
        await add_sums(session, CategoryMonth, _rows(self.cells, ("funder_id", "period", "category"), CELL_SUMS),
                       ["funder_id", "period", "category"], maxima=["worst_delay_seconds"])
        keys = ["funder_id", "period", "category", "provider_id", "voucher_id"]
        await self._voucher_months(session)
        await add_sums(session, ProviderMonth, _rows(self.providers, keys[:4], PROVIDER_SUMS), keys[:4])
        await add_sums(session, FunderMonth, _rows(self.funder_months, ("funder_id", "period"), FUNDER_MONTH_SUMS),
                       ["funder_id", "period"])
        await self._drop_empty(session)
        await insert_new(session, PriceListFact, self.price_lists, ["price_list_id"])
        await insert_new(session, ApprovalChange, self.approval_changes, ["event_id"])
        await self._write_choices(session)
        await self._write_members(session)
        await add_sums(session, FunderFigures, _rows(self.figures, ("funder_id",), FIGURE_SUMS), ["funder_id"])

    async def _write_charges(self, session: AsyncSession) -> None:
        """The changed charge facts: new ones whole (an upsert); on PostgreSQL a loaded one only in the columns
        the batch changed, one ``UPDATE ... FROM unnest`` per set of columns (a settlement touches 4 of 20:
        a fifth of the values to send; a fact that did not change is not written)."""
        whole: list[dict[str, Any]] = []
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        pg = _pg(session)
        for charge_id in sorted(self.changed_charges):
            c, before = self.charges[charge_id], self.charges_before.get(charge_id)
            if before is None or not pg:
                whole.append(c)
                continue
            columns = tuple(sorted({n for n, _ in c.items() - before.items()}))  # charge_id never changes
            if columns:
                by_columns[columns].append(c)
        await put_rows(session, ChargeFact, whole, ["charge_id"])
        table = ChargeFact.__table__
        for columns, rows in by_columns.items():
            names = ["charge_id", *columns]
            arrays = ", ".join(f"CAST(:c{i} AS {_pg_array_type(table.c[n])})" for i, n in enumerate(names))
            sets = ", ".join(f"{n} = x.{n}" for n in columns)
            update = sa.text(f"UPDATE {table.name} t SET {sets} FROM unnest({arrays}) AS x({', '.join(names)}) "
                             "WHERE t.charge_id = x.charge_id")
            for start in range(0, len(rows), FACTS_PER_STATEMENT):  # (see FACTS_PER_STATEMENT)
                part = rows[start:start + FACTS_PER_STATEMENT]
                await session.execute(update, {f"c{i}": [r[n] for r in part] for i, n in enumerate(names)})

    async def _write_choices(self, session: AsyncSession) -> None:
        """The choices, a switch with its voucher's client and age band when reporting knows the voucher's
        issue; and the switches folded before the issue of a voucher issued in this batch get theirs now
        (so the rows are the same in any order)."""
        for c in self.choices:
            v = self.vouchers.get(c["voucher_id"]) if c["previous_provider_id"] is not None else None
            known = v is not None and v["client_ref"] is not None
            c["client"], c["age_band"] = (v["client_ref"], v["age_band"]) if known else (None, None)
        await insert_new(session, ProviderChoice, self.choices, ["event_id"])
        affected = {(c["funder_id"], c["period"]) for c in self.choices if c["previous_provider_id"] is not None}
        issued = [(vid, v["client_ref"], v["age_band"]) for vid in sorted(self.changed_vouchers)
                  if (v := self.vouchers[vid])["client_ref"] is not None
                  and not self.vouchers_before[vid].get("_had_client")]
        t = ProviderChoice.__table__
        if issued:
            affected |= {tuple(r) for r in (await session.execute(
                sa.select(t.c.funder_id, t.c.period).where(
                    t.c.voucher_id.in_(sa.bindparam("ids", expanding=True)), t.c.client.is_(None),
                    t.c.previous_provider_id.is_not(None)).distinct(), {"ids": [i[0] for i in issued]})).all()}
            await self._complete_switches(session, issued)
        if affected:
            await recount_switches(session, sorted(affected))

    async def _complete_switches(self, session: AsyncSession, issued: list[tuple]) -> None:
        t = ProviderChoice.__table__
        if _pg(session):
            await session.execute(sa.text(
                "UPDATE reporting_choice c SET client = v.client, age_band = v.age_band FROM unnest("
                "CAST(:ids AS varchar[]), CAST(:clients AS varchar[]), CAST(:bands AS varchar[])) "
                "AS v(voucher_id, client, age_band) WHERE c.voucher_id = v.voucher_id AND c.client IS NULL "
                "AND c.previous_provider_id IS NOT NULL"),
                {"ids": [i[0] for i in issued], "clients": [i[1] for i in issued], "bands": [i[2] for i in issued]})
        else:
            await session.execute(
                sa.update(t).where(t.c.voucher_id == sa.bindparam("vid"), t.c.client.is_(None),
                                   t.c.previous_provider_id.is_not(None))
                .values(client=sa.bindparam("cl"), age_band=sa.bindparam("band")),
                [{"vid": vid, "cl": client, "band": band} for vid, client, band in issued])

    async def _drop_empty(self, session: AsyncSession) -> None:
        """Rows whose sums a cancellation or correction brought back to zero are removed, so that the
        read models are the same whatever the order and batching of the events."""
        for model, keys, sums in ((VoucherMonth, ("funder_id", "period", "category", "provider_id", "voucher_id"),
                                   USAGE_SUMS),
                                  (CategoryMonth, ("funder_id", "period", "category"), CELL_SUMS),
                                  (ProviderMonth, ("funder_id", "period", "category", "provider_id"), PROVIDER_SUMS),
                                  (FunderMonth, ("funder_id", "period"), FUNDER_MONTH_SUMS)):
            wanted = sorted({VoucherMonth: self.lowered_keys, CategoryMonth: self.lowered_cells,
                             ProviderMonth: self.lowered_providers, FunderMonth: self.lowered_funder_months}[model])
            if not wanted:
                continue
            t = model.__table__
            await session.execute(sa.delete(t).where(sa.tuple_(*[t.c[k] for k in keys]).in_(wanted),
                                                     *[t.c[n] == 0 for n in sums]))

    async def _write_members(self, session: AsyncSession) -> None:
        """Distinct providers and clients per funder: new ones add to the funder's figures."""
        if not self.members:
            return
        table = FunderMember.__table__
        wanted = sorted(self.members)
        if _pg(session):  # the members inserted are the new ones
            result = await _pg_rows(session, table, [{"funder_id": f, "kind": k, "member_id": m} for f, k, m in wanted],
                                    ["funder_id", "kind", "member_id"], "DO NOTHING", returning="funder_id, kind")
            for funder_id, kind in result.all():
                self.figures[funder_id]["providers_approved" if kind == "provider" else "clients"] += 1
            return
        known: set[tuple] = set()
        for i in range(0, len(wanted), 2000):
            part = wanted[i:i + 2000]
            result = await session.execute(sa.select(table.c.funder_id, table.c.kind, table.c.member_id).where(
                sa.tuple_(table.c.funder_id, table.c.kind, table.c.member_id).in_(part)))
            known.update(tuple(r) for r in result)
        new = [m for m in wanted if m not in known]
        await insert_new(session, FunderMember, [{"funder_id": f, "kind": k, "member_id": m} for f, k, m in new],
                         ["funder_id", "kind", "member_id"])
        for funder_id, kind, _ in new:
            self.figures[funder_id]["providers_approved" if kind == "provider" else "clients"] += 1


CELL_SUMS = ("clients_served", "clients_settled", "vouchers_issued", "vouchers_active", "vouchers_expired", "vouchers_revoked", "units_granted_x100",
             "charges", "units_x100", "charged_cents", "own_share_cents", "priced_x100", "settled_charges",
             "settled_gross_cents", "fee_cents", "net_cents", "settled_within_14_days", "worst_delay_seconds")
USAGE_SUMS = ("charges", "units_x100", "charged_cents", "settled_charges")
PROVIDER_SUMS = ("clients", "charges", "units_x100", "charged_cents")
FUNDER_MONTH_SUMS = ("clients_served", "clients_settled")
FIGURE_SUMS = ("providers_approved", "approvals", "vouchers_issued", "clients", "provider_choices",
               "charges_accepted", "units_charged_x100", "charged_cents", "own_share_cents", "charges_settled",
               "settlements", "settled_gross_cents", "fee_cents", "net_cents")


async def _count_clients(session: AsyncSession, model: type, names: list[str], deltas: dict[tuple, dict[str, int]],
                         cells: dict[tuple, dict[str, int]], lowered: set[tuple]) -> None:
    """Distinct clients: apply the batch's changes of each client's counters (``charges``,
    ``settled_charges``) to its row (keyed by ``names``, the client last), and count in ``cells`` (keyed by
    the rest) the clients whose counter leaves or comes back to zero. Rows back at zero are removed."""
    keys = sorted(k for k, v in deltas.items() if any(v.values()))
    if not keys:
        return
    t = model.__table__
    counters = ("charges", "settled_charges")
    changes = [{**dict(zip(names, key)), **{n: int(deltas[key].get(n, 0)) for n in counters}} for key in keys]
    if _pg(session):  # add the changes; the upsert returns the counters after them
        result = await add_sums(session, model, changes, names, returning=", ".join(names + list(counters)))
        after = {tuple(r[:len(names)]): dict(zip(counters, r[len(names):])) for r in result.all()}
        now = {key: {n: after[key][n] - deltas[key].get(n, 0) for n in counters} for key in keys}
    else:
        now = {tuple(r[n] for n in names): r for r in await rows_by_keys(session, t, names, keys)}
    rows, gone = [], []
    for key in keys:
        old = now.get(key, {"charges": 0, "settled_charges": 0})
        new = {name: old[name] + deltas[key].get(name, 0) for name in counters}
        cell = cells[key[:-1]]
        cell["clients_served"] += (new["charges"] > 0) - (old["charges"] > 0)
        cell["clients_settled"] += (new["settled_charges"] > 0) - (old["settled_charges"] > 0)
        if (new["charges"] > 0) < (old["charges"] > 0) or (new["settled_charges"] > 0) < (old["settled_charges"] > 0):
            lowered.add(key[:-1])
        if new["charges"] == 0 and new["settled_charges"] == 0:
            gone.append(key)
        else:
            rows.append({**dict(zip(names, key)), **new})
    if not _pg(session):
        await put_rows(session, model, rows, names)
    await rows_by_keys(session, t, names, gone, delete=True)


def _rows(sums: dict[tuple | str, dict[str, int]], keys: tuple[str, ...] | list[str], names: tuple[str, ...]
          ) -> list[dict[str, Any]]:
    out = []
    for key in sorted(sums):
        values = sums[key]
        if not any(values.values()):
            continue  # nothing to add (a charge and its cancellation in one batch)
        key_t = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(keys, key_t)), **{n: int(values.get(n, 0)) for n in names}})
    return out


async def recount_switches(session: AsyncSession, pairs: list[tuple[str, str]]) -> None:
    """Count the switches of these (funder, month) pairs again from their rows in ``reporting_choice``:
    per age band and for all bands (``*``), switches and distinct clients."""
    c, sm = ProviderChoice.__table__, SwitchMonth.__table__
    client = sa.func.coalesce(c.c.client, sa.literal_column("'voucher:'") + c.c.voucher_id)
    band = sa.func.coalesce(c.c.age_band, sa.literal_column("'unknown'"))
    for start in range(0, len(pairs), 500):
        chunk = pairs[start:start + 500]
        where = [c.c.previous_provider_id.is_not(None), sa.tuple_(c.c.funder_id, c.c.period).in_(chunk)]
        await session.execute(sa.delete(sm).where(sa.tuple_(sm.c.funder_id, sm.c.period).in_(chunk)))
        counts = (sa.func.count(), sa.func.count(sa.distinct(client)))
        by_band = sa.select(c.c.funder_id, c.c.period, band, *counts).where(*where).group_by(
            c.c.funder_id, c.c.period, band)
        all_bands = sa.select(c.c.funder_id, c.c.period, sa.literal_column("'*'"), *counts).where(*where).group_by(
            c.c.funder_id, c.c.period)
        await session.execute(sm.insert().from_select(
            ["funder_id", "period", "age_band", "switches", "clients"], sa.union_all(by_band, all_bands)))


#: the settled half of charges whose facts are there and not yet settled, written by charge id in one statement, which
#: returns what the sums need of each fact (``_fold_settled``): no fact read into Python and written back
_SETTLE_FACTS = (
    "UPDATE reporting_charge t SET settled_at = x.settled_at, gross_cents = x.gross, fee_cents = x.fee, "
    "net_cents = x.net FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[]) "
    "AS x(charge_id, settled_at, gross, fee, net) WHERE t.charge_id = x.charge_id AND t.settled_at IS NULL "
    "RETURNING t.charge_id, t.funder_id, t.period, t.category, t.provider_id, t.voucher_id, t.accepted_at")


async def _fold_settled(session: AsyncSession, items: list[tuple[Envelope, Event | None]]) -> None:
    """A run of ``ChargesSettled`` on PostgreSQL, set-based: each charge's settled half goes straight onto its fact
    (``_SETTLE_FACTS``, in parts of ``FACTS_PER_STATEMENT``, in charge id order), and the sums are worked out from
    what the statement returns, by the ``Batch`` code the general fold uses. A charge the statement did not change
    (settled already: a redelivery, or heard in v1; or no fact yet: settled before its acceptance arrived) goes
    through the general fold (``Batch._settle``): the same rows as ``fold`` gives, for less work (the facts are
    neither read whole into Python nor compared column by column)."""
    wanted: dict[str, tuple] = {}  # charge id -> (funder, settled at, gross, fee, net): its first mention counts
    voucher_ids: set[str] = set()
    for _, e in items:
        funder_id, at = e.funder_id, e.settled_at
        for one in e.charges:
            voucher_ids.add(one.voucher_id)
            if one.charge_id not in wanted:
                wanted[one.charge_id] = (funder_id, at, one.gross_cents, one.fee_cents, one.net_cents)
    batch = Batch(charges={}, vouchers=await _load(session, VoucherFact, "voucher_id", voucher_ids))
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    ordered = sorted(wanted)
    settled: set[str] = set()
    for start in range(0, len(ordered), FACTS_PER_STATEMENT):
        part = ordered[start:start + FACTS_PER_STATEMENT]
        values = [wanted[i] for i in part]
        records = await driver.fetch(_SETTLE_FACTS, part, [v[1] for v in values], [v[2] for v in values],
                                     [v[3] for v in values], [v[4] for v in values])
        for r in records:
            charge_id = r["charge_id"]
            funder_id, at, gross, fee, net = wanted[charge_id]
            settled.add(charge_id)
            f = batch.figures[funder_id]  # as Batch._settle counts a charge settled now
            f["charges_settled"] += 1
            f["settled_gross_cents"] += gross
            f["fee_cents"] += fee
            f["net_cents"] += net
            if r["accepted_at"] is not None:
                batch._settled({"funder_id": r["funder_id"], "period": r["period"], "category": r["category"],
                                "provider_id": r["provider_id"], "voucher_id": r["voucher_id"],
                                "accepted_at": r["accepted_at"], "settled_at": at, "gross_cents": gross,
                                "fee_cents": fee, "net_cents": net})
    rest = [i for i in wanted if i not in settled]  # in the order the events name them
    if rest:
        batch.charges.update(await _load(session, ChargeFact, "charge_id", set(rest)))
        for charge_id in rest:
            funder_id, at, gross, fee, net = wanted[charge_id]
            batch._settle(charge_id, funder_id, at, gross, fee, net)
    await batch.write(session)


async def fold(session: AsyncSession, items: list[tuple[Envelope, Event | None]]) -> None:
    """Fold a run of events (any types, any order) into the read models, in the caller's transaction. Each
    ``ChargesSettled`` (version 2) stands for the ``ChargeSettled`` of each charge it lists, each ``ChargesAccepted``
    (version 2) for the ``ChargeAccepted`` of each charge it lists, each ``VouchersIssued`` (version 2) for the
    ``VoucherIssued`` of each voucher it lists."""
    if items and all(isinstance(e, ChargesSettled) for _, e in items) and _pg(session):
        await _fold_settled(session, items)
        return
    charge_ids = {e.charge_id for _, e in items
                  if isinstance(e, (ChargeAccepted, ChargeSettled, ChargeCancelled, ChargeCorrected))}
    voucher_ids = {e.voucher_id for _, e in items
                   if isinstance(e, (VoucherIssued, VoucherAmended, VoucherRevoked, VoucherExpired, ChargeAccepted,
                                     ChargeSettled, ChargeCancelled, ChargeCorrected))
                   or (isinstance(e, VoucherProviderChosen) and e.previous_provider_id is not None)}
    for _, e in items:
        if isinstance(e, (ChargesSettled, ChargesAccepted)):
            charge_ids.update(c.charge_id for c in e.charges)
            voucher_ids.update(c.voucher_id for c in e.charges)
        elif isinstance(e, VouchersIssued):
            voucher_ids.update(v.voucher_id for v in e.vouchers)
    batch = Batch(charges=await _load(session, ChargeFact, "charge_id", charge_ids),
                  vouchers=await _load(session, VoucherFact, "voucher_id", voucher_ids))
    for env, event in items:
        batch.apply(env, event)
    await batch.write(session)


async def archive_many(session: AsyncSession, envelopes: list[Envelope], bodies: list[str] | None = None) -> None:
    """Keep the events. ``bodies``: each envelope's JSON as it came (what the consumer parsed it from), kept as it is
    instead of writing the envelope out again (a ``charge.settled.v2`` of 1,000 charges is ~200 kB of JSON)."""
    if bodies is None or len(bodies) != len(envelopes):
        bodies = [env.model_dump_json() for env in envelopes]
    rows = [{"id": env.id, "type": env.type, "time": env.time, "envelope": body}
            for env, body in zip(envelopes, bodies)]
    if _pg(session):  # numbered in arrival order as they go in (what a running rebuild folds at its end)
        await session.execute(sa.text(
            "INSERT INTO reporting_event (seq, id, type, time, envelope) SELECT nextval('reporting_event_seq'), * "
            "FROM unnest(CAST(:i AS text[]), CAST(:t AS text[]), CAST(:w AS timestamptz[]), CAST(:e AS text[]))"),
            {"i": [r["id"] for r in rows], "t": [r["type"] for r in rows], "w": [r["time"] for r in rows],
             "e": [r["envelope"] for r in rows]})
    else:
        await session.execute(sa.insert(ReceivedEvent.__table__), rows)


async def archive(session: AsyncSession, env: Envelope, _event: Event | None = None) -> None:
    """An event no read model uses (yet): kept for a later rebuild."""
    await archive_many(session, [env])
    log.info("report.event_received", type=env.type, event_id=env.id, subject=env.subject)


def _bodies_as_received(items: list[tuple[Envelope, Event]]) -> list[str] | None:
    """The run's message bodies as the consumer received them (``consumer.current_run``, in the items' order), or
    None when they are not at hand (a call from elsewhere) or not text."""
    from seteli_shared.consumer import current_run

    messages = current_run.get()
    if len(messages) != len(items):
        return None
    try:
        return [bytes(m.body).decode("utf-8") for m in messages]
    except (UnicodeDecodeError, AttributeError, TypeError):
        return None


async def archive_and_fold(session: AsyncSession, items: list[tuple[Envelope, Event]]) -> None:
    """The consumer's batch handler: keep the events (as received), then fold them."""
    await archive_many(session, [env for env, _ in items], _bodies_as_received(items))
    await fold(session, items)
    log.info("report.events_folded", type=items[0][0].type, count=len(items))


FOLDED = (ProviderApproved, ProviderSuspended, ProviderReinstated, ProviderRevoked, PriceListPublished,
          VoucherIssued, VouchersIssued, VoucherAmended, VoucherRevoked, VoucherExpired, VoucherProviderChosen,
          ChargeAccepted, ChargesAccepted, ChargeSettled, ChargesSettled, ChargeCancelled, ChargeCorrected,
          SettlementCreated)
#: the consumer's subscriptions: every folded event type, a run of them at a time
BATCH_HANDLERS = {t.event_type(): archive_and_fold for t in FOLDED}
