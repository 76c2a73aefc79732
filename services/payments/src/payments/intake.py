"""Charge intake use cases: charging by voucher code, bulk charges (many lines in chunked
transactions, each chunk set-based through ``bulk.charge_chunk`` with the rules of
``usecases.accept_charge``), Idempotency-Key records, and a provider cancelling an unsettled charge."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from typing import AsyncIterator, Iterable, Iterator

from pydantic import Field, ValidationError, model_validator
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only, greenlet_spawn

from seteli_shared import audit, codes
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import Category, ChargeCancelled
from seteli_shared.ids import digest_text
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import add_event
from seteli_shared.schedule import every
from seteli_shared.schemas import NUMBER_REASONS, BusinessDate, Cents, RequestModel, Units

from . import bulk, csv_charges, domain, usecases
from .models import Charge, IdempotencyRecord, ProviderChoiceView, VoucherView

log = get_logger(__name__)
CANCELLED = usecases.CANCELLED
#: lines of one JSON bulk request at most (read whole), of a CSV file (streamed), and lines per transaction
MAX_LINES = 10_000
MAX_CSV_LINES = 100_000
CHUNK_LINES = 2500
#: the request hash of an Idempotency-Key claimed by a streamed body, until the body has been read
HASH_PENDING = "pending"
#: after how long a request still "in flight" is taken to have died (how long a key is kept: ``IdempotencyKey``)
IN_FLIGHT_LEASE = timedelta(minutes=10)
TARIFFS = ("weekday", "weekday_evening", "saturday", "sunday")


# ------------------------------------------------------------------ the voucher by its code
async def voucher_by_code(session: AsyncSession, code: str, provider_id: str) -> str:
    """The voucher whose code the client gave this provider. Only a provider the client chose (now, or
    before a switch) finds it; to any other the code is unknown (``voucher_not_found``), so that a
    code tells nothing to a provider that has not been given it."""
    canonical = codes.normalise(code)
    if canonical is not None:
        views = (await session.execute(select(VoucherView.voucher_id, VoucherView.provider_id).where(
            VoucherView.voucher_code == canonical))).all()
        if len(views) == 1:
            voucher_id, chosen = views[0]
            if chosen == provider_id or (await session.execute(select(ProviderChoiceView.voucher_id).where(
                    ProviderChoiceView.voucher_id == voucher_id,
                    ProviderChoiceView.provider_id == provider_id).limit(1))).first() is not None:
                return voucher_id
    raise bulk.code_not_found()


async def charge_by_id_or_code(sessions, clock: Clock, principal: Principal, voucher_id: str | None,  # noqa: ANN001
                               voucher_code: str | None, provider_reference: str,
                               req: domain.ChargeRequest) -> tuple[Charge, bool]:
    """``usecases.charge_voucher`` for a voucher named by its id or by its code."""
    if voucher_id is None:
        async with sessions() as session:
            voucher_id = await voucher_by_code(session, voucher_code or "", req.provider_id)
    return await usecases.charge_voucher(sessions, clock, principal, voucher_id, provider_reference, req)


# ------------------------------------------------------------------ Idempotency-Key
@dataclass(frozen=True)
class Replay:
    status_code: int
    body: object
    request_hash: str = ""


def request_hash(operation: str, payload: bytes | object) -> str:
    """The fingerprint of a request: raw bytes as sent, or a parsed body in canonical JSON."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, sort_keys=True, default=str,
                                                                separators=(",", ":")).encode()
    return digest_text(hashlib.sha256(operation.encode() + b"\0" + raw))  # stored: never a look-alike code


def stream_hash(operation: str):  # noqa: ANN201
    """``request_hash`` of raw bytes fed as they arrive (``update``; ``ids.digest_text`` of it at the end)."""
    return hashlib.sha256(operation.encode() + b"\0")


def check_key(key: str) -> str:
    if not 1 <= len(key) <= 200 or not key.isprintable() or not key.isascii():
        raise DomainError("invalid_idempotency_key", "Idempotency-Key must be 1 to 200 printable ASCII characters")
    return key


@dataclass(frozen=True)
class IdempotencyKey:
    """A caller's Idempotency-Key as payments keeps it: only ``digest``, its HMAC-SHA256 under the service's
    ``IDEMPOTENCY_KEY_SECRET``, and for how long (``retention``). The key itself is never stored: a caller
    may put anything in it (an order number, a name), and a plain hash of a guessable key could be
    reversed by trying candidates, which a keyed hash cannot without the secret. The records are kept
    per caller (``provider_id``), so the same key of two callers stays two records."""

    digest: str
    retention: timedelta

    @classmethod
    def of(cls, key: str, secret: str, retention: timedelta) -> "IdempotencyKey":
        return cls(key_digest(secret, check_key(key)), retention)


def key_digest(secret: str, key: str) -> str:
    """The stored form of an Idempotency-Key (migration 0013 hashed the keys kept before it the same way)."""
    return digest_text(hmac.new(secret.encode(), key.encode(), hashlib.sha256))


async def begin_idempotent(sessions, clock: Clock, provider_id: str, key: IdempotencyKey,  # noqa: ANN001
                           operation: str, fingerprint: str | None) -> Replay | None:
    """Claim the key for this request (None: go ahead), or the first answer to replay. The same key
    with another request: 422 ``idempotency_key_reused``; while the first is still being answered: 409
    ``request_in_flight``. A key is kept ``key.retention``; an answer never stored within ``IN_FLIGHT_LEASE``
    (its process died) frees the key again. ``fingerprint`` None: a streamed body, whose hash is known
    only once it has been read; the replay then carries the first request's hash for the caller to
    compare (``finish_idempotent`` stores it)."""
    claim = HASH_PENDING if fingerprint is None else fingerprint
    now = clock.now()
    for _ in range(2):
        try:
            async with unit_of_work(sessions) as session:
                row = await session.get(IdempotencyRecord, (provider_id, key.digest), with_for_update=True)
                if row is None:
                    session.add(IdempotencyRecord(provider_id=provider_id, key_hash=key.digest, operation=operation,
                                                  request_hash=claim, created_at=now, expires_at=now + key.retention))
                    await session.flush()
                    return None
                abandoned = row.status_code is None and row.created_at + IN_FLIGHT_LEASE <= now
                if row.expires_at <= now or abandoned:
                    row.operation, row.request_hash, row.status_code, row.response_body = (
                        operation, claim, None, None)
                    row.created_at, row.expires_at = now, now + key.retention
                    await session.flush()
                    return None
                if row.operation != operation or (fingerprint is not None and row.request_hash != fingerprint
                                                  and row.request_hash != HASH_PENDING):
                    raise key_reused()
                if row.status_code is None:
                    raise Conflict("request_in_flight", "the first request with this Idempotency-Key is still "
                                   "being answered; retry shortly")
                if fingerprint is not None and row.request_hash != fingerprint:
                    raise key_reused()
                return Replay(row.status_code, json.loads(row.response_body or "null"), row.request_hash)
        except IntegrityError:
            continue  # a twin claimed it between our read and insert: read it again
    raise Conflict("request_in_flight", "the first request with this Idempotency-Key is still being answered")


def key_reused() -> DomainError:
    return DomainError("idempotency_key_reused", "this Idempotency-Key was already used for another request; "
                       "use a new key for a new request")


async def finish_idempotent(sessions, provider_id: str, key: IdempotencyKey,  # noqa: ANN001
                            status_code: int | None, body: object = None, request_hash: str | None = None) -> None:
    """Keep the answer to replay (``status_code`` None: forget the key, the request may be tried again);
    ``request_hash``: a streamed body's, now that it has been read."""
    this_key = (IdempotencyRecord.provider_id == provider_id, IdempotencyRecord.key_hash == key.digest)
    async with unit_of_work(sessions) as session:
        if status_code is None:
            await session.execute(delete(IdempotencyRecord).where(*this_key))
        else:
            values = {"status_code": status_code, "response_body": json.dumps(body, default=str)}
            if request_hash is not None:
                values["request_hash"] = request_hash
            await session.execute(update(IdempotencyRecord).where(*this_key).values(**values))


def replayable(error: DomainError) -> bool:
    """A refusal worth replaying: final ones (not a voucher that may simply not have arrived yet)."""
    return not error.details.get("retryable")


async def forget_expired_keys(sessions, clock: Clock) -> int:  # noqa: ANN001
    """The purge (run by the service's scheduler every ``IDEMPOTENCY_PURGE_INTERVAL_SECONDS``): records
    whose retention has passed are deleted; a key is then free again. Safe when several instances run it."""
    now = clock.now()
    async with unit_of_work(sessions) as session:
        result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
    removed = result.rowcount or 0
    log.info("idempotency.purged", removed=removed, expired_by=now.isoformat())
    return removed


async def purge_scheduler(sessions, clock: Clock, settings) -> None:  # noqa: ANN001
    """Purge expired Idempotency-Key records every ``idempotency_purge_interval_seconds``."""
    await every("payments.idempotency_purge", settings.idempotency_purge_interval_seconds,
                lambda: forget_expired_keys(sessions, clock), quiet=True)


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


@dataclass(frozen=True)
class Line:
    """A line to charge, or (``reason`` set) one refused before it reached the rules."""

    line: int
    provider_reference: str | None
    charge: ChargeLine | None = None
    reason: str | None = None
    details: dict | None = None


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


def json_lines(items: list) -> Iterator[Line]:
    for n, raw in enumerate(items, start=1):
        yield line_of(n, raw)


def csv_lines(rows: Iterable) -> Iterator[Line]:  # noqa: ANN001  (csv_charges.Row)
    count = 0
    for row in rows:
        count += 1
        if count > MAX_CSV_LINES:
            yield Line(row.line, row.provider_reference, reason="too_many_lines",
                       details={"max_lines": MAX_CSV_LINES})
        elif row.reason is not None:
            yield Line(row.line, row.provider_reference, reason=row.reason, details={"fields": row.fields})
        else:
            yield line_of(row.line, row.values)


async def stream_csv_lines(chunks: AsyncIterator[bytes], batch: int = 250) -> AsyncIterator[Line]:
    """``csv_lines`` of a body as it arrives: the CSV reader (``csv_charges.rows``, pull-based) runs in a
    greenlet whose chunk source awaits the body's next chunk, ``batch`` lines at a time. Only the chunk
    being read and the lines of the chunks in the pipeline are held, never the file."""

    def next_chunk() -> bytes | None:
        while True:
            chunk = await_only(anext(chunks, None))
            if chunk is None or chunk:
                return chunk

    lines = csv_lines(csv_charges.rows(iter(next_chunk, None)))
    while True:
        some = await greenlet_spawn(lambda: list(islice(lines, batch)))
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


def _retryable(exc: BaseException) -> bool:
    """A chunk worth running again whole: a deadlock or serialisation failure, or a twin of one of its
    provider references that a concurrent request committed after the chunk read the earlier charges
    (its insert then fails on the reference's unique key; the next run reads the twin)."""
    if isinstance(exc, IntegrityError):
        return True
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code in ("40P01", "40001", "23505") or "deadlock" in str(exc).lower()


async def _chunk(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                 chunk: list[Line]) -> list[dict]:
    """One chunk in one transaction (``bulk.charge_chunk``), run again whole (up to three times) when
    it meets a deadlock or a concurrent twin; the lines' answers in their order."""
    wanted = [bulk.wanted_of(i, line.charge, provider_id) for i, line in enumerate(chunk) if line.reason is None]
    for attempt in range(3):
        try:
            async with unit_of_work(sessions) as session:
                outcomes = await bulk.charge_chunk(session, clock, principal, provider_id, wanted)
            break
        except Exception as e:  # noqa: BLE001  (DBAPIError, or asyncpg's own from COPY)
            if attempt == 2 or not _retryable(e):
                raise
            log.info("charges.bulk_chunk_again", provider_id=provider_id, lines=len(chunk), error=type(e).__name__)
    out = []
    for i, line in enumerate(chunk):
        if line.reason is not None:
            out.append(_result(line, "refused", reason=line.reason, details=line.details))
        else:
            o = outcomes[i]
            out.append(_result(line, o.status, charge_id=o.charge_id, reason=o.reason, details=o.details))
    return out


async def charge_bulk(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                      lines: Iterable[Line] | AsyncIterator[Line], chunk_lines: int = CHUNK_LINES) -> dict:
    """Charge every line: ``chunk_lines`` lines per transaction (charges, ledger, outbox and audit
    together), set-based (``bulk``): the chunk's vouchers locked and everything the rules need read in a
    few statements, the rules applied line by line in memory, the accepted lines' rows written with one
    statement per table. A refused line leaves the others; a chunk that meets a deadlock (or a concurrent
    twin of a reference) is run again whole (nothing of it was committed).

    The chunks run one after another; while one waits for the database, the next chunk's lines are read
    and checked (pure work: nothing of a chunk is read from the database before the one before it has
    committed). A line that cannot be read (the file's encoding or quoting) is refused after the chunk
    in flight has ended, as when the lines were read one chunk at a time."""
    results: list[dict] = []
    it = aiter(lines) if hasattr(lines, "__aiter__") else _yielding(iter(lines))
    in_flight: asyncio.Task | None = None
    try:
        while True:
            chunk = await _read_chunk(it, chunk_lines)
            if in_flight is not None:
                results += await in_flight
                in_flight = None
            if not chunk:
                break
            in_flight = asyncio.create_task(_chunk(sessions, clock, principal, provider_id, chunk))
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
    return {"lines": len(results), **counts, "results": results}


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


# ------------------------------------------------------------------ a provider cancels its charge
async def cancel_charge(sessions, clock: Clock, principal: Principal, charge_id: str) -> tuple[Charge, bool]:  # noqa: ANN001
    """The charge's provider cancels it while it is unsettled: the ledger entry reversed, ``ChargeCancelled``.
    Returns the charge and whether it was cancelled now (False: it had been already)."""
    async with unit_of_work(sessions) as session:
        charge = (await session.execute(select(Charge).where(Charge.id == charge_id).with_for_update())).scalar_one_or_none()
        if charge is None or (not principal.is_operator and charge.provider_id != principal.provider_id):
            raise NotFound("charge")
        if charge.status == CANCELLED:
            return charge, False
        if charge.status == domain.SETTLED or charge.settlement_id is not None:
            raise Conflict("charge_settled", "the charge is settled already: a correction after settlement goes "
                           "through the settlement's correction", settlement_id=charge.settlement_id)
        now = clock.now()
        charge.status, charge.cancelled_at = CANCELLED, now
        session.add(charge)
        await session.flush()
        reverse = [(account, -amount) for account, amount in
                   domain.charge_postings(charge.funder_id, charge.provider_id, charge.amount_cents)]
        await usecases.post(session, "charge_cancellation", charge.id, domain.balanced(reverse), now)
        await add_event(session, ChargeCancelled(
            charge_id=charge.id, voucher_id=charge.voucher_id, funder_id=charge.funder_id,
            provider_id=charge.provider_id, category=charge.category, service_date=charge.service_date,
            units=from_hundredths(charge.units_x100), amount_cents=charge.amount_cents, cancelled_at=now),
            usecases.SOURCE)
        await audit.record(session, principal, "charge.cancel", "charge", charge.id, charge.funder_id)
    log.info("charge.cancelled", charge_id=charge.id, amount_cents=charge.amount_cents)
    return charge, True
