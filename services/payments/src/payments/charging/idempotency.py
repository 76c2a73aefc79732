"""Idempotency-Key records: a caller's key kept only as its keyed hash, the first answer replayed for the same
request, another request under the same key refused, and the purge of records past their retention (run by
the service's scheduler, ``app.jobs``)."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import AsyncIterator, Awaitable, Callable

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, DomainError
from seteli_shared.ids import digest_text
from seteli_shared.logging import get_logger
from seteli_shared.schedule import every

from ..models import IdempotencyRecord

log = get_logger(__name__)
#: the request hash of an Idempotency-Key claimed by a streamed body, until the body has been read
HASH_PENDING = "pending"
#: after how long a request still "in flight" is taken to have died (how long a key is kept: ``IdempotencyKey``)
IN_FLIGHT_LEASE = timedelta(minutes=10)


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


# ------------------------------------------------------------------ answering under a key
async def idempotent(sessions, clock: Clock, provider_id: str, key: IdempotencyKey | None,  # noqa: ANN001
                     operation: str,
                     fingerprint: Callable[[], object], answer: Callable[[], Awaitable[tuple[int, object]]]
                     ) -> tuple[int, object]:
    """Run ``answer`` under the caller's Idempotency-Key (if it sent one): the first answer is kept and
    replayed for the same request; a final refusal is kept too (a retryable one frees the key)."""
    if key is None:
        return await answer()
    replay = await begin_idempotent(sessions, clock, provider_id, key, operation,
                                           request_hash(operation, fingerprint()))
    if replay is not None:
        return replay.status_code, replay.body
    try:
        status, body = await answer()
    except DomainError as e:
        await finish_idempotent(sessions, provider_id, key, e.status_code if replayable(e) else None,
                                       e.body())
        raise
    except BaseException:
        await finish_idempotent(sessions, provider_id, key, None)
        raise
    await finish_idempotent(sessions, provider_id, key, status, body)
    return status, body


async def idempotent_stream(sessions, clock: Clock, provider_id: str,  # noqa: ANN001
                            key: IdempotencyKey | None,
                            operation: str, body: AsyncIterator[bytes],
                            answer: Callable[[AsyncIterator[bytes]], Awaitable[tuple[int, object]]]
                            ) -> tuple[int, object]:
    """``idempotent`` for a body read as it arrives: the key is claimed first; its request hash is
    computed as the body passes and stored with the answer. A key answered before: the body is read
    (hashed, nothing charged) and the first answer replayed when it is the same, 422
    ``idempotency_key_reused`` when not. A refusal is not kept (the key is freed): the lines a streamed
    file charged before it come back ``repeated`` when it is sent again."""
    if key is None:
        return await answer(body)
    replay = await begin_idempotent(sessions, clock, provider_id, key, operation, None)
    hasher = stream_hash(operation)
    if replay is not None:
        async for chunk in body:
            hasher.update(chunk)
        if replay.request_hash != digest_text(hasher):
            raise key_reused()
        return replay.status_code, replay.body

    async def hashed() -> AsyncIterator[bytes]:
        async for chunk in body:
            hasher.update(chunk)
            yield chunk

    try:
        status, out = await answer(hashed())
    except BaseException:
        await finish_idempotent(sessions, provider_id, key, None)
        raise
    await finish_idempotent(sessions, provider_id, key, status, out, request_hash=digest_text(hasher))
    return status, out
