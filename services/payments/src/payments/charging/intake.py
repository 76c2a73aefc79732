"""Charge intake: the lines of a bulk (a JSON list read whole, or a CSV file streamed as it arrives) and a
single charge, each put through the charge engine (``engine.charge_lines``): a bulk in chunks of
``CHUNK_LINES`` lines, one transaction each (``store.run_batch``); a single charge as a batch of one
(``fast_path`` on PostgreSQL, else ``store.run_batch``)."""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from itertools import islice
from typing import AsyncIterator, Iterable, Iterator

from pydantic import Field, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import progress
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.events import Category
from seteli_shared.logging import get_logger
from seteli_shared.money import to_hundredths
from seteli_shared.schemas import DATE_MAX, DATE_MIN, NUMBER_REASONS, BusinessDate, Cents, RequestModel, Units

from . import csv_format, domain, engine, fast_path, reads, store
from .rows import BULK, AcceptedEvents, public, public_json
from .schemas import ChargePublic

log = get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]
#: lines of one JSON bulk request at most (read whole), of a CSV file (streamed), and lines per transaction: the
#: first chunk's, then twice as many each chunk up to ``MAX_CHUNK_LINES`` (a streamed file's first lines are
#: committed early; later chunks are larger, as each chunk reads its vouchers' units used so far once)
MAX_LINES = 10_000
MAX_CSV_LINES = 100_000
CHUNK_LINES = 2500
MAX_CHUNK_LINES = 10_000


# ------------------------------------------------------------------ a single charge: a batch of one
async def charge_voucher(sessions: Sessions, clock: Clock, principal: Principal,
                         line: engine.Line) -> tuple[ChargePublic, bool]:
    """A provider charges a voucher: the charge as answered and whether it is new (a retry with the same provider
    reference answers the first charge). A refusal raises its reason."""
    outcome = await _charged(sessions, clock, principal, line)
    if outcome.status == engine.REPEATED:
        return ChargePublic.of(await reads.get_charge(sessions, outcome.charge_id)), False
    return public(outcome.charge), True


async def charge_answer(sessions: Sessions, clock: Clock, principal: Principal,
                        line: engine.Line) -> tuple[dict, bool]:
    """``charge_voucher``'s answer as JSON values (``ChargePublic`` in JSON mode): a new charge's written straight
    from the engine's values (``rows.public_json``), no model made and dumped."""
    outcome = await _charged(sessions, clock, principal, line)
    if outcome.status == engine.REPEATED:
        return ChargePublic.of(await reads.get_charge(sessions, outcome.charge_id)).model_dump(mode="json"), False
    return public_json(outcome.charge), True


async def _charged(sessions: Sessions, clock: Clock, principal: Principal, line: engine.Line) -> engine.Outcome:
    db = sessions.kw.get("bind")
    outcome = None
    if db is not None and db.dialect.name == "postgresql":
        outcome = await fast_path.charge_one(db, clock, principal, line)
    if outcome is None:
        outcome = (await store.run_batch(sessions, clock, principal, line.req.provider_id, [line]))[line.index]
    if outcome.error is not None:
        raise outcome.error
    # no log line of its own: the request's ``http.request`` line (with its correlation id), the charge's audit row
    # (the same correlation id) and its ``ChargeAccepted`` event record it; a second line cost every charge a JSON
    # rendering, a scan for personal data and a write (bench/README.md, "Single charge: where PostgreSQL's
    # time a charge goes")
    return outcome


def engine_line(index: int, c, provider_id: str) -> engine.Line:  # noqa: ANN001  (ChargeLine or ChargeCreate)
    """A request's line as the engine takes it (the tariff and category as their values)."""
    tariff, category = getattr(c.tariff, "value", c.tariff), getattr(c.category, "value", c.category)
    return engine.Line(index, c.voucher_id, c.voucher_code, c.provider_reference, domain.ChargeRequest(
        provider_id, c.service_date, to_hundredths(c.units), c.unit_price_cents, tariff, category))


def ready_line(index: int, ready: tuple, provider_id: str) -> engine.Line:
    """``engine_line`` of a line read without the model (``ready_values``)."""
    voucher_id, code, ref, day, units_x100, price, tariff, category = ready
    return engine.Line(index, voucher_id, code, ref, domain.ChargeRequest(provider_id, day, units_x100, price, tariff,
                                                                          category))


# ------------------------------------------------------------------ bulk lines
class ChargeLine(RequestModel):
    """One line of a bulk: the provider is the caller's; the voucher by its id or by its code."""

    voucher_id: str | None = Field(default=None, min_length=1, max_length=64)
    voucher_code: str | None = Field(default=None, min_length=1, max_length=32,
                                     description="the code the client gave the provider, instead of voucher_id")
    provider_reference: str = Field(min_length=1, max_length=100)
    service_date: BusinessDate
    units: Units = Field(gt=0, le=10000)
    unit_price_cents: Cents | None = Field(default=None, gt=0, le=10_000_000)
    tariff: str | None = Field(default=None, pattern="^(weekday|weekday_evening|saturday|sunday)$")
    category: Category | None = None

    @model_validator(mode="after")
    def _one_voucher(self) -> "ChargeLine":
        if (self.voucher_id is None) == (self.voucher_code is None):
            raise ValueError("name the voucher by voucher_id or by voucher_code (one of them)")
        return self


@dataclass(frozen=True, slots=True)
class Line:
    """A line to charge, or (``reason`` set) one refused before it reached the rules. A line to charge holds
    its ``ChargeLine`` (``charge``), or, read by ``ready_values`` without the model, what the engine takes of it
    (``ready``: voucher id, voucher code, provider reference, service date, units in hundredths, unit price in
    cents, tariff, category)."""

    line: int
    provider_reference: str | None
    charge: ChargeLine | None = None
    reason: str | None = None
    details: dict | None = None
    ready: tuple | None = None


def line_of(n: int, raw: object) -> Line:
    """A JSON line (or a CSV row's values) checked against ``ChargeLine``; field errors name fields only."""
    ref = raw.get("provider_reference") if isinstance(raw, dict) else None
    ref = ref.strip()[:100] if isinstance(ref, str) else None
    try:
        return Line(n, ref, ChargeLine.model_validate(raw))
    except ValidationError as e:
        errors = [{"loc": [str(x) for x in err["loc"]], "reason": err["type"]} for err in e.errors()][:20]
        reasons = {err["reason"] for err in errors}
        # one kind of bad number or date (as a request answers it: web.install_error_handlers): say which
        reason = reasons.pop() if len(reasons) == 1 and reasons <= set(NUMBER_REASONS) else "invalid_request"
        return Line(n, ref, reason=reason, details={"errors": errors})


# ------------------------------------------------------------------ a CSV row's values without the line model
#: what ``ChargeLine`` takes, as ``ready_values`` checks it
_KEYS = frozenset(ChargeLine.model_fields)
_TARIFFS = frozenset(domain.TARIFFS)
_CATEGORY = re.compile(r"[a-z_]{2,40}")  # ``events.Category``
_PLAIN_UNITS = re.compile(r"[0-9]{1,5}(?:\.[0-9]{1,2})?")
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAX_UNITS = Decimal(10000)


@lru_cache(maxsize=4096)
def _units_x100(text: str) -> int | None:
    """Plain units text (``csv_format.decimal_text``: ``0.01``, ``1.5``) as hundredths when ``ChargeLine`` takes it
    as is (more than nothing, at most 10,000, at most two decimals written); None for anything else."""
    if not _PLAIN_UNITS.fullmatch(text):
        return None
    units = Decimal(text)
    return int(units * 100) if 0 < units <= _MAX_UNITS else None


@lru_cache(maxsize=4096)
def _day(text: str) -> date | None:
    """An ISO date within the business dates; None for anything else."""
    if not _ISO_DAY.fullmatch(text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return day if DATE_MIN <= day <= DATE_MAX else None


def _text(value: object, longest: int) -> bool:
    return type(value) is str and 0 < len(value) <= longest and value == value.strip()


def ready_values(values: dict) -> tuple | None:
    """A CSV row's values (``csv_format.Row.values``), or a JSON bulk's line, as the charge engine takes them
    (``Line.ready``), read without ``ChargeLine`` when they are plainly what it accepts, else None: the line then
    goes through the model, which gives every refusal its reason. Accepting here only what the model accepts, with
    the same values, is ``tests/charging/test_csv_ready.py``'s property."""
    if not values.keys() <= _KEYS:
        return None
    voucher_id, code, ref = values.get("voucher_id"), values.get("voucher_code"), values.get("provider_reference")
    if (voucher_id is None) == (code is None) or not _text(ref, 100):
        return None
    if not (_text(voucher_id, 64) if code is None else _text(code, 32)):
        return None
    day, units = values.get("service_date"), values.get("units")
    day = _day(day) if type(day) is str else None
    units = _units_x100(units) if type(units) is str else None
    if day is None or units is None:
        return None
    price, tariff, category = values.get("unit_price_cents"), values.get("tariff"), values.get("category")
    if price is not None and not (type(price) is int and 0 < price <= 10_000_000):
        return None
    if (tariff is not None and tariff not in _TARIFFS) or (category is not None and not (
            type(category) is str and _CATEGORY.fullmatch(category))):
        return None
    return voucher_id, code, ref, day, units, price, tariff, category


def json_lines(items: list) -> Iterator[Line]:
    """A JSON bulk's lines: read without ``ChargeLine`` when plainly what it accepts (``ready_values``, as a CSV
    row's values), else through the model and its reasons."""
    for n, raw in enumerate(items, start=1):
        ready = ready_values(raw) if type(raw) is dict else None
        yield line_of(n, raw) if ready is None else Line(n, ready[2], ready=ready)


def csv_lines(rows: Iterable) -> Iterator[Line]:  # noqa: ANN001  (csv_format.Row)
    count = 0
    for row in rows:
        count += 1
        if count > MAX_CSV_LINES:
            yield Line(row.line, row.provider_reference, reason="too_many_lines",
                       details={"max_lines": MAX_CSV_LINES})
        elif row.reason is not None:
            yield Line(row.line, row.provider_reference, reason=row.reason, details={"fields": row.fields})
        else:
            ready = ready_values(row.values)
            yield line_of(row.line, row.values) if ready is None else Line(row.line, ready[2], ready=ready)


async def stream_csv_lines(chunks: AsyncIterator[bytes], batch: int = 250,
                           warnings: list[dict] | None = None) -> AsyncIterator[Line]:
    """``csv_lines`` of a body as it arrives: the CSV reader (``csv_format.rows``, pull-based) runs in a worker
    thread, ``batch`` lines at a time, and takes each chunk of the body from the event loop as it needs it.
    Only the chunk being read and the lines of the chunks in the pipeline are held, never the file. The
    file's warnings (its header's) are appended to ``warnings`` once its header is read."""
    loop = asyncio.get_running_loop()

    async def pull() -> bytes | None:
        return await anext(chunks, None)

    def next_chunk() -> bytes | None:
        while True:
            chunk = asyncio.run_coroutine_threadsafe(pull(), loop).result()
            if chunk is None or chunk:
                return chunk

    lines = csv_lines(csv_format.rows(iter(next_chunk, None), warnings))
    while True:
        some = await asyncio.to_thread(lambda: list(islice(lines, batch)))
        if not some:
            return
        for line in some:
            yield line


def _result(line: Line, status: str, charge_id: str | None = None, reason: str | None = None,
            details: dict | None = None) -> dict:
    out = {"line": line.line, "provider_reference": line.provider_reference, "status": status,
           "charge_id": charge_id, "reason": reason}
    if details:
        out["details"] = details
    return out


def _wanted(chunk: list[Line], provider_id: str) -> list[engine.Line]:
    """The chunk's lines to charge as the engine takes them (indexed by their place in the chunk)."""
    return [engine_line(i, line.charge, provider_id) if line.ready is None else ready_line(i, line.ready, provider_id)
            for i, line in enumerate(chunk) if line.reason is None]


async def _chunk(sessions: Sessions, clock: Clock, principal: Principal, provider_id: str,
                 chunk: list[Line], wanted: list[engine.Line], events: AcceptedEvents,
                 ahead: engine.Ahead | None = None, carry: engine.Carry | None = None) -> list[dict]:
    """One chunk through the engine in one transaction (``store.run_batch``); the lines' answers in order."""
    outcomes = await store.run_batch(sessions, clock, principal, provider_id, wanted, events, ahead,
                                     carry) if wanted else {}
    out = []
    for i, line in enumerate(chunk):
        if line.reason is not None:
            out.append(_result(line, "refused", reason=line.reason, details=line.details))
        else:
            o = outcomes[i]
            out.append(_result(line, o.status, charge_id=o.charge_id, reason=o.reason, details=o.details))
    return out


async def charge_bulk(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                      lines: Iterable[Line] | AsyncIterator[Line], chunk_lines: int = CHUNK_LINES,
                      max_chunk_lines: int = MAX_CHUNK_LINES, events: AcceptedEvents = BULK) -> dict:
    """Charge every line: ``chunk_lines`` lines in the first transaction (charges, ledger, outbox and audit
    together; the outbox's events as ``events`` says, by default one ``ChargesAccepted`` per funder and up to
    1,000 charges), twice as many in each next one up to ``max_chunk_lines``, through the charge engine (``engine``, ``store``): the chunk's vouchers locked and everything
    the rules need read in a few statements, the rules applied line by line in memory, the accepted lines'
    rows written with one statement per table. A refused line leaves the others; a chunk that meets a deadlock (or a concurrent
    twin of a reference) is run again whole (nothing of it was committed).

    The chunks run one after another; while one is being written, the next chunk's lines are read and
    checked, and ruled ahead (``engine.rule_ahead``) on the state the chunk in flight's rules left (the units
    it used, its references): nothing of a chunk is read from the database before the one before it has
    committed, and the next chunk takes what was ruled ahead only if the state it then loads under its
    vouchers' locks gives the rules the same inputs (else its rules run again there). A line that cannot be
    read (the file's encoding or quoting) is refused after the chunk in flight has ended, as when the lines
    were read one chunk at a time."""
    results: list[dict] = []
    it = aiter(lines) if hasattr(lines, "__aiter__") else _yielding(iter(lines))
    in_flight: asyncio.Task | None = None
    carry = engine.Carry()
    async with progress.track(sessions, "charges.bulk") as job:  # lines read so far: its total as it grows
        try:
            while True:
                chunk = await _read_chunk(it, chunk_lines)
                chunk_lines = max(chunk_lines, min(2 * chunk_lines, max_chunk_lines))
                wanted = _wanted(chunk, provider_id)
                ahead = None
                if in_flight is not None:
                    if wanted:
                        ahead = await _rule_ahead(in_flight, carry, wanted, clock)
                    results += await in_flight
                    await job.advance(len(results) - job.done)
                    in_flight = None
                if not chunk:
                    break
                job.total = (job.total or 0) + len(chunk)
                carry.take()  # what the next chunk is ruled on comes from this one
                in_flight = asyncio.create_task(_chunk(sessions, clock, principal, provider_id, chunk, wanted, events,
                                                       ahead, carry))
        except asyncio.CancelledError:
            if in_flight is not None:
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
            raise
        except BaseException:
            if in_flight is not None:  # the chunk before the unreadable line ends first (its error comes first)
                await in_flight
            raise
    counts = {"accepted": 0, "repeated": 0, "refused": 0}
    for r in results:
        counts[r["status"]] += 1
    log.info("charges.bulk", provider_id=provider_id, lines=len(results), **counts)
    return {"lines": len(results), **counts, "results": results, "warnings": []}  # a CSV file's: the router's


async def _rule_ahead(in_flight: asyncio.Task, carry: engine.Carry, wanted: list[engine.Line],
                      clock: Clock) -> engine.Ahead | None:
    """The next chunk ruled on the state the chunk in flight's rules leave, once they have ended (None if the
    chunk in flight ends first without them, or the lines cannot be ruled ahead)."""
    ruled = asyncio.ensure_future(carry.ruled.wait())
    try:
        await asyncio.wait((in_flight, ruled), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ruled.cancel()
    state = carry.take() if carry.ruled.is_set() else None
    if state is None:
        return None
    return await engine.rule_ahead(state, wanted, clock.today(), clock.now)


async def _yielding(it: Iterator[Line]) -> AsyncIterator[Line]:
    """Lines read from memory, letting the loop run every 100 (so that the chunk in flight goes on as soon
    as the database answers it)."""
    for n, line in enumerate(it, start=1):
        yield line
        if n % 100 == 0:
            await asyncio.sleep(0)


async def _read_chunk(it: AsyncIterator[Line], size: int) -> list[Line]:
    """The next ``size`` lines (fewer at the end)."""
    chunk: list[Line] = []
    async for line in it:
        chunk.append(line)
        if len(chunk) >= size:
            break
    return chunk


