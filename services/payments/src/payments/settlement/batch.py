"""Settling many charges at once, in the settlement run's transaction (``runs.settle``)."""
from __future__ import annotations

import json
from datetime import datetime
from dataclasses import dataclass
from itertools import groupby
from typing import NamedTuple, Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared.db import WHOLE_RUN_STATEMENT_SECONDS
from seteli_shared.events import ChargeSettled, ChargesSettled, Envelope, SettledCharge
from seteli_shared.ids import new_id
from seteli_shared.outbox import add_events, event_row, wake_relay_on_commit
from seteli_shared.tracing import current_traceparent

from ..charging import domain
from ..models import SOURCE, Charge

_C = Charge.__table__


class ToSettle(NamedTuple):
    """A charge to settle (a tuple: a run makes one per charge, up to millions)."""

    id: str
    voucher_id: str
    category: str
    amount_cents: int
    accepted_at: datetime


@dataclass(frozen=True, slots=True)
class Charges:
    """A group's charges to settle, column by column in (accepted_at, id) order: a run settles up to millions of
    charges, and columns cost no object per charge (``of`` turns rows such as ``ToSettle`` into columns)."""

    ids: Sequence[str]
    voucher_ids: Sequence[str]
    categories: Sequence[str]
    amounts: Sequence[int]
    accepted_at: Sequence[datetime]

    @classmethod
    def of(cls, rows: Sequence[Sequence]) -> "Charges":
        """Rows of (id, voucher_id, category, amount_cents, accepted_at) as columns."""
        return cls(*([row[k] for row in rows] for k in range(5)))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def earliest(self) -> datetime:
        return min(self.accepted_at)


@dataclass(frozen=True, slots=True)
class Totals:
    """A group's charges as totals only: the set-based run (``SettlementBatch``) leaves the charges themselves in
    the database, where their fees are spread and their events written."""

    count: int
    gross: int
    earliest: datetime
    largest: int  # the largest charge (cents)

    def __len__(self) -> int:
        return self.count


_SETTLE_ORDER = (Charge.funder_id, Charge.provider_id, Charge.accepted_at, Charge.id)
#: what stands for a chunk's charges in its envelope's JSON until the database puts them there
_LISTED = "@@settled-charges@@"
_MAX_BIGINT = 2**63 - 1
#: each charge as the JSON ``model_dump_json`` makes of its dict in ``_with_charges`` (keys in the same order)
_CHARGE_JSON = ("""'{"charge_id":' || to_json(id)::text || ',"voucher_id":' || to_json(voucher_id)::text || """
                """',"category":' || to_json(category)::text || ',"gross_cents":' || amount_cents || """
                """',"fee_cents":' || fee || ',"net_cents":' || (amount_cents - fee) || '}'""")
#: the set-based run's last statement: each settled group's fee spread over its charges as ``figures.spread`` does
#: (each charge its floor of fee x amount / gross, a cent more to the largest remainders, ties to the earlier
#: charge in (accepted_at, id) order), the charges updated, and each chunk of ``per_event`` charges of a
#: settlement listed in order in its ``charge.settled.v2`` envelope (made in Python, ``_LISTED`` in its place)
_SETTLE_ALL = """
WITH g AS (SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::{t}[], $5::{t}[]) WITH ORDINALITY
           AS g(funder_id, provider_id, sid, fee_total, gross, gn)),
p AS (SELECT c.id, c.tid, c.voucher_id, c.category, c.amount_cents, c.accepted_at, g.gn, g.sid, g.fee_total, g.gross,
             g.fee_total * c.amount_cents AS part
      FROM settle_charges c JOIN g ON g.funder_id = c.funder_id AND g.provider_id = c.provider_id),
f AS MATERIALIZED (
      SELECT id, tid, voucher_id, category, amount_cents, gn, sid,
             row_number() OVER (PARTITION BY gn ORDER BY accepted_at, id) AS rn,
             ({div}(part, gross) + (row_number() OVER (PARTITION BY gn ORDER BY {mod}(part, gross) DESC, accepted_at, id)
                <= fee_total - sum({div}(part, gross)) OVER (PARTITION BY gn))::int)::bigint AS fee
      FROM p),
u AS (UPDATE payments_charge c SET status = '{settled}', settlement_id = f.sid, fee_cents = f.fee,
             net_cents = c.amount_cents - f.fee FROM (SELECT * FROM f ORDER BY tid) f WHERE c.ctid = f.tid AND c.id = f.id
      RETURNING 1)
INSERT INTO outbox (message_id, routing_key, body, created_at, attempts, traceparent)
SELECT e.message_id, 'charge.settled.v2', e.prefix || a.listed || e.suffix, e.created_at, 0, $12
FROM (SELECT gn, (rn - 1) / $13 AS chunk, string_agg({charge}, ',' ORDER BY rn) AS listed
      FROM f GROUP BY 1, 2) a
JOIN unnest($6::bigint[], $7::bigint[], $8::varchar[], $9::text[], $10::text[], $11::timestamptz[])
     AS e(gn, chunk, message_id, prefix, suffix, created_at) ON e.gn = a.gn AND e.chunk = a.chunk
WHERE (SELECT count(*) FROM u) = $14"""


def _settle_all(whole: bool) -> str:
    """``_SETTLE_ALL`` in whole numbers (``bigint``) or, where fee x amount could pass them, in ``numeric``."""
    t, div, mod = ("bigint", "_div", "_mod") if whole else ("numeric", "div", "mod")
    sql = _SETTLE_ALL.format(t=t, div=div, mod=mod, settled=domain.SETTLED, charge=_CHARGE_JSON)
    if whole:  # bigint division and remainder (floor and remainder: neither operand is negative)
        sql = sql.replace("_div(part, gross)", "(part / gross)").replace("_mod(part, gross)", "(part % gross)")
    return sql
_SENTINELS = ("@@settle-eid@@", "@@settle-cid@@", "@@settle-vid@@", 7777777701, 7777777702, 7777777703)


class SettlementBatch:
    """The charges of one settlement run, in the run's transaction: taken (``FOR UPDATE SKIP LOCKED``),
    then handed out one (funder, provider) group at a time; each group the caller settles (``settled``) gets its
    charges updated and its outbox rows: ``events`` ``v2`` (the default) one ``ChargesSettled`` per settlement,
    split into chunks of at most ``per_event`` charges; ``v1`` one ``ChargeSettled`` per charge; ``both`` both
    (while consumers move over to v2).

    On PostgreSQL the charges are copied into a temporary table once and each group's totals read in one
    statement. With ``v2`` the run is set-based: a group is handed out as its ``Totals``, and one statement at the
    end spreads each settled group's fee over its charges (as ``figures.spread`` does), updates the charges and
    writes the events, their envelopes made in Python with the charges' JSON written by the database (no charge
    travels to Python and back). With ``v1`` or ``both`` (or a group the whole-number spread does not cover) a
    group's charges are read into Python as columns (``Charges``, in (accepted_at, id) order), its fees go in as
    two arrays and one ``UPDATE ... FROM`` at the end, and the events with ``COPY`` (each body the one
    ``Envelope.wrap`` makes, formatted from a template made by it per settlement and category). Elsewhere
    (SQLite) the same rows go in with ordinary statements."""

    def __init__(self, session: AsyncSession, now: datetime, *, events: str = "v2", per_event: int = 1000):
        if events not in ("v1", "v2", "both"):
            raise ValueError(f"settled events {events!r}: v1, v2 or both")
        if not 1 <= per_event <= 5000:
            raise ValueError(f"charges per settled event {per_event}: 1 to 5,000")
        self.session, self.now = session, now
        self.v1, self.v2, self.per_event = events in ("v1", "both"), events in ("v2", "both"), per_event
        self.pg = None
        self._rows: list | None = None
        self._groups: list | None = None  # PostgreSQL: each group's key and totals, in key order
        self.whole_set = False  # PostgreSQL: the set-based run (``Totals`` handed out)
        self._settled: list[tuple] = []  # set-based: (funder, provider, settlement, fee, gross, largest) per group
        self._chunks: list[tuple] = []  # set-based: each event's (group 1.., chunk, id, prefix, suffix, time)
        self._traceparent: str | None = None
        self._direct: bool | None = None  # v2 bodies written from values (``_v2_rows``): None until compared

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
                "category, amount_cents, accepted_at, ctid AS tid FROM payments_charge WHERE status = $1 AND settlement_id IS "
                "NULL FOR UPDATE SKIP LOCKED".replace("$1", f"'{domain.ACCEPTED}'"),
                timeout=WHOLE_RUN_STATEMENT_SECONDS)
            await self.pg.execute("ANALYZE settle_charges")  # a temporary table: never analysed otherwise
            self._groups = await self.pg.fetch(
                "SELECT funder_id, provider_id, count(*), sum(amount_cents), min(amount_cents), max(amount_cents), "
                "min(accepted_at) FROM settle_charges GROUP BY 1, 2 ORDER BY 1, 2", timeout=WHOLE_RUN_STATEMENT_SECONDS)
            # the whole-number spread covers amounts that are not negative and a gross above zero (``spread``)
            self.whole_set = self.v2 and not self.v1 and all(g[4] >= 0 and g[3] > 0 for g in self._groups)
            if not self.whole_set:
                await self.pg.execute(
                    "CREATE INDEX ON settle_charges (funder_id, provider_id, accepted_at, id); "
                    "CREATE TEMP TABLE settle_fees (id varchar NOT NULL, settlement_id varchar NOT NULL, "
                    "fee bigint NOT NULL) ON COMMIT DROP")
        else:
            q = (select(Charge.id, Charge.funder_id, Charge.provider_id, Charge.voucher_id, Charge.category,
                        Charge.amount_cents, Charge.accepted_at)
                 .where(Charge.status == domain.ACCEPTED, Charge.settlement_id.is_(None))
                 .order_by(*_SETTLE_ORDER).with_for_update(skip_locked=True))
            self._rows = (await self.session.execute(q)).all()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None or self.pg is None:
            return
        if self.whole_set:
            await self._settle_all()
            return
        await self.pg.execute("ANALYZE settle_fees")  # a temporary table: never analysed otherwise
        await self.pg.execute(
            "UPDATE payments_charge c SET status = $1, settlement_id = f.settlement_id, fee_cents = f.fee, "
            "net_cents = c.amount_cents - f.fee FROM settle_fees f WHERE c.id = f.id"
            .replace("$1", f"'{domain.SETTLED}'"), timeout=WHOLE_RUN_STATEMENT_SECONDS)

    async def count(self) -> int:
        """How many charges the run takes."""
        if self.pg is not None:
            return sum(g[2] for g in self._groups)
        return len(self._rows)

    async def funders(self) -> set[str]:
        if self.pg is not None:
            return {g[0] for g in self._groups}
        return {r.funder_id for r in self._rows}

    async def groups(self):  # noqa: ANN201  (async iterator of (funder_id, provider_id, Charges | Totals))
        if self.pg is None:
            for (funder_id, provider_id), group in groupby(self._rows, key=lambda r: (r.funder_id, r.provider_id)):
                yield funder_id, provider_id, Charges.of(
                    [(r.id, r.voucher_id, r.category, r.amount_cents, r.accepted_at) for r in group])
            return
        for funder_id, provider_id, count, gross, _smallest, largest, earliest in self._groups:
            if self.whole_set:
                yield funder_id, provider_id, Totals(count, int(gross), earliest, largest)
                continue
            rows = await self.pg.fetch(
                "SELECT id, voucher_id, category, amount_cents, accepted_at FROM settle_charges "
                "WHERE funder_id = $1 AND provider_id = $2 ORDER BY accepted_at, id", funder_id, provider_id)
            yield funder_id, provider_id, Charges.of(rows)

    async def settled(self, settlement_id: str, funder_id: str, provider_id: str, charges: Charges | Totals,
                      fees: list[int] | int) -> None:
        """The group's charges belong to this settlement, with these fees (one each, in order; for ``Totals``
        the charges' fee, which the run's last statement spreads over them)."""
        if isinstance(charges, Totals):
            self._add_group(settlement_id, funder_id, provider_id, charges, fees)
            wake_relay_on_commit(self.session)
            return
        if self.pg is None:
            await self.session.execute(
                update(_C).where(_C.c.id == bindparam("cid")).values(
                    status=domain.SETTLED, settlement_id=settlement_id, fee_cents=bindparam("fee"),
                    net_cents=bindparam("net")),
                [{"cid": i, "fee": fee, "net": a - fee} for i, a, fee in zip(charges.ids, charges.amounts, fees)])
            if self.v1:
                await add_events(self.session, [ChargeSettled(
                    charge_id=i, settlement_id=settlement_id, voucher_id=v, funder_id=funder_id,
                    provider_id=provider_id, category=c, gross_cents=a, fee_cents=fee, net_cents=a - fee,
                    settled_at=self.now) for i, v, c, a, fee in _columns(charges, fees)], SOURCE)
            if self.v2:
                await add_events(self.session, self._v2(settlement_id, funder_id, provider_id, charges, fees), SOURCE)
            return
        # the fees as two arrays (the driver encodes them whole), made into rows by the server
        await self.pg.execute("INSERT INTO settle_fees (id, settlement_id, fee) SELECT unnest($1::varchar[]), $2, "
                              "unnest($3::bigint[])", list(charges.ids), settlement_id, fees)
        traceparent = current_traceparent()  # the run's span (None when tracing is off)
        rows = self._v1_rows(settlement_id, funder_id, provider_id, charges, fees, traceparent) if self.v1 else []
        if self.v2:
            rows += self._v2_rows(settlement_id, funder_id, provider_id, charges, fees, traceparent)
        await self.pg.copy_records_to_table("outbox", records=rows, columns=[
            "message_id", "routing_key", "body", "created_at", "attempts", "traceparent"])
        wake_relay_on_commit(self.session)

    def _add_group(self, settlement_id: str, funder_id: str, provider_id: str, totals: Totals, fee: int) -> None:
        """A settled group of the set-based run: its figures, and the envelope of each of its events with
        ``_LISTED`` where the chunk's charges go (``_with_charges``'s JSON, cut in two)."""
        self._settled.append((funder_id, provider_id, settlement_id, fee, totals.gross, totals.largest))
        self._traceparent = current_traceparent()  # the run's span (None when tracing is off)
        stand_in = [SettledCharge.model_construct(charge_id=_LISTED, voucher_id=_LISTED, category=_LISTED,
                                                  gross_cents=0, fee_cents=0, net_cents=0)]
        for chunk in range((totals.count + self.per_event - 1) // self.per_event):
            env = Envelope.wrap(ChargesSettled(settlement_id=settlement_id, funder_id=funder_id,
                                               provider_id=provider_id, settled_at=self.now, charges=stand_in), SOURCE)
            body = env.model_copy(update={"data": {**env.data, "charges": [_LISTED]}}).model_dump_json()
            prefix, mark, suffix = body.partition(f'"{_LISTED}"')
            if not mark or _LISTED in suffix or not prefix.endswith("[") or not suffix.startswith("]"):
                raise AssertionError("a ChargesSettled envelope without one place for its charges")
            self._chunks.append((len(self._settled), chunk, env.id, prefix, suffix, env.time))

    async def _settle_all(self) -> None:
        """The set-based run's settled groups: fees spread, charges updated and events written (``_SETTLE_ALL``),
        in ``bigint`` unless a fee x amount could pass it. The first event's body is read back and must be the
        envelope of a ``ChargesSettled`` listing the right charges."""
        if not self._settled:
            return
        whole = all(fee * largest <= _MAX_BIGINT and gross <= _MAX_BIGINT for *_, fee, gross, largest in self._settled)
        # the spread's sorts in memory: ~200 bytes a charge, 16-256 MB, this transaction only (SET LOCAL)
        await self.pg.execute(f"SET LOCAL work_mem = '{min(256, max(16, sum(g[2] for g in self._groups) * 200 >> 20))}MB'")
        cols, chunks = list(zip(*self._settled)), list(zip(*self._chunks))
        settled = set(zip(cols[0], cols[1]))  # every charge of these groups must be updated, or no event is written
        status = await self.pg.execute(
            _settle_all(whole), list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]), list(cols[4]),
            list(chunks[0]), list(chunks[1]), list(chunks[2]), list(chunks[3]), list(chunks[4]), list(chunks[5]),
            self._traceparent, self.per_event, sum(g[2] for g in self._groups if (g[0], g[1]) in settled),
            timeout=WHOLE_RUN_STATEMENT_SECONDS)
        if status != f"INSERT 0 {len(self._chunks)}":
            raise AssertionError(f"a settlement run wrote {status} of {len(self._chunks)} charge.settled.v2 events")
        await self._check_first_event()

    async def _check_first_event(self) -> None:
        sid, (_gn, _chunk, message_id, *_) = self._settled[0][2], self._chunks[0]
        body = await self.pg.fetchval("SELECT body FROM outbox WHERE message_id = $1", message_id)
        event = Envelope.model_validate_json(body).event()
        rows = await self.pg.fetch(
            "SELECT id, voucher_id, category, amount_cents, fee_cents, net_cents FROM payments_charge "
            "WHERE settlement_id = $1 ORDER BY accepted_at, id LIMIT $2", sid, self.per_event)
        listed = [tuple(c.model_dump(mode="json").values()) for c in getattr(event, "charges", ())]
        if not isinstance(event, ChargesSettled) or listed != [tuple(r) for r in rows]:  # (raise: the run rolls back)
            raise AssertionError("a settlement's charge.settled.v2 event does not list its charges as settled")

    def _v2(self, settlement_id: str, funder_id: str, provider_id: str, charges: Charges,
            fees: list[int]) -> list[ChargesSettled]:
        """The settlement's ``ChargesSettled``: its charges in order, at most ``per_event`` in one event (each
        charge's part built without validating again: its values are the database's, validated when charged)."""
        listed = [SettledCharge.model_construct(charge_id=i, voucher_id=v, category=c, gross_cents=a, fee_cents=fee,
                                                net_cents=a - fee) for i, v, c, a, fee in _columns(charges, fees)]
        return [ChargesSettled(settlement_id=settlement_id, funder_id=funder_id, provider_id=provider_id,
                               settled_at=self.now, charges=listed[i:i + self.per_event])
                for i in range(0, len(listed), self.per_event)]

    def _v2_rows(self, settlement_id: str, funder_id: str, provider_id: str, charges: Charges,
                 fees: list[int], traceparent: str | None) -> list[tuple]:
        """The outbox rows of the settlement's ``ChargesSettled`` (``_v2``), each body the one ``Envelope.wrap``
        makes: the envelope of the event with its first charge (validated), its ``charges`` then the whole
        chunk's as the plain values ``model_dump(mode="json")`` gives (no model per charge made and dumped). The
        run's first event is also made the ordinary way and the two bodies compared: if they differ, every
        event of the run is made the ordinary way."""
        rows = []
        everyone = [{"charge_id": i, "voucher_id": v, "category": c, "gross_cents": a, "fee_cents": fee,
                     "net_cents": a - fee} for i, v, c, a, fee in _columns(charges, fees)]
        for i in range(0, len(charges), self.per_event):
            listed = everyone[i:i + self.per_event]
            if self._direct is not True:
                event = ChargesSettled(settlement_id=settlement_id, funder_id=funder_id, provider_id=provider_id,
                                       settled_at=self.now, charges=[SettledCharge.model_construct(**c) for c in listed])
                env, row = event_row(event, SOURCE)
                if self._direct is None:
                    self._direct = _with_charges(env, listed) == row["body"]
                rows.append((row["message_id"], row["routing_key"], row["body"], row["created_at"], 0, traceparent))
                continue
            env = Envelope.wrap(ChargesSettled(settlement_id=settlement_id, funder_id=funder_id,
                                               provider_id=provider_id, settled_at=self.now,
                                               charges=[SettledCharge(**listed[0])]), SOURCE)
            rows.append((env.id, env.routing_key, _with_charges(env, listed), env.time, 0, traceparent))
        return rows

    def _v1_rows(self, settlement_id: str, funder_id: str, provider_id: str, charges: Charges,
                 fees: list[int], traceparent: str | None) -> list[tuple]:
        """One ``ChargeSettled`` outbox row per charge, each body formatted from a template per category."""
        templates: dict[str, tuple[str, str, datetime] | None] = {}
        rows = []
        for cid, vid, category, amount, fee in _columns(charges, fees):
            if category not in templates:
                templates[category] = self._template(settlement_id, funder_id, provider_id, category)
            t = templates[category]
            if t is None:  # a value the template cannot hold apart: this event the ordinary way
                _env, row = event_row(ChargeSettled(
                    charge_id=cid, settlement_id=settlement_id, voucher_id=vid, funder_id=funder_id,
                    provider_id=provider_id, category=category, gross_cents=amount, fee_cents=fee,
                    net_cents=amount - fee, settled_at=self.now), SOURCE)
                rows.append((row["message_id"], row["routing_key"], row["body"], row["created_at"], 0, traceparent))
                continue
            fmt, key, at = t
            eid = new_id()
            rows.append((eid, key, fmt % (eid, _json_text(cid), _json_text(vid), amount, fee, amount - fee), at, 0,
                         traceparent))
        return rows

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


def _columns(charges: Charges, fees: Sequence[int]):  # noqa: ANN202  (iterator of (id, voucher, category, gross, fee))
    return zip(charges.ids, charges.voucher_ids, charges.categories, charges.amounts, fees)


def _with_charges(env: Envelope, charges: list[dict]) -> str:
    """The JSON of ``env`` with its data's ``charges`` replaced by ``charges``."""
    return env.model_copy(update={"data": {**env.data, "charges": charges}}).model_dump_json()


class _Positional(str):
    """A %-format with named places ``%(0)s``..``%(5)d`` filled from a tuple (a place may come twice)."""

    def __mod__(self, values: tuple) -> str:  # type: ignore[override]
        return str.__mod__(self, dict(zip(("0", "1", "2", "3", "4", "5"), values)))


def _json_text(value: str) -> str:
    """``value`` as it stands inside a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]

