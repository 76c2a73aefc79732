"""Charge intake over HTTP: bulk charges (JSON or CSV), Idempotency-Key, a provider cancelling its
charge. Parse, authorise, call a use case (``intake``)."""
from __future__ import annotations

import json
from typing import Annotated, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from seteli_shared.auth import Principal, Role, require
from seteli_shared.clock import Clock, ClockDep
from seteli_shared.errors import DomainError
from seteli_shared.ids import digest_text
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from . import intake
from .api import ChargePublic, IdempotencyKeyHeader

router = APIRouter()
CHARGERS = (Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM)
BULK_PATH = "/charges/bulk"
#: the caller's Idempotency-Key, hashed as it arrives (``api.idempotency_key``)
IdempotencyKey = IdempotencyKeyHeader


class LineResult(BaseModel):
    line: int = Field(description="the line's number: its position in a JSON list (from 1), its line in a CSV "
                      "file (the header is line 1)")
    provider_reference: str | None
    status: str = Field(description="accepted | repeated (a charge with this reference exists: it) | refused")
    charge_id: str | None = None
    reason: str | None = Field(default=None, description="why the line was refused (the single charge's reasons, "
                               "or invalid_request with the fields, invalid_number_or_date, too_many_lines...)")
    details: dict | None = None


class BulkResult(BaseModel):
    lines: int
    accepted: int
    repeated: int
    refused: int
    results: list[LineResult]


async def idempotent(sessions, clock: Clock, provider_id: str, key: intake.IdempotencyKey | None,  # noqa: ANN001
                     operation: str,
                     fingerprint: Callable[[], object], answer: Callable[[], Awaitable[tuple[int, object]]]
                     ) -> tuple[int, object]:
    """Run ``answer`` under the caller's Idempotency-Key (if it sent one): the first answer is kept and
    replayed for the same request; a final refusal is kept too (a retryable one frees the key)."""
    if key is None:
        return await answer()
    replay = await intake.begin_idempotent(sessions, clock, provider_id, key, operation,
                                           intake.request_hash(operation, fingerprint()))
    if replay is not None:
        return replay.status_code, replay.body
    try:
        status, body = await answer()
    except DomainError as e:
        await intake.finish_idempotent(sessions, provider_id, key, e.status_code if intake.replayable(e) else None,
                                       e.body())
        raise
    except BaseException:
        await intake.finish_idempotent(sessions, provider_id, key, None)
        raise
    await intake.finish_idempotent(sessions, provider_id, key, status, body)
    return status, body


def answer_of(status: int, body: object) -> JSONResponse:
    return JSONResponse(body, status_code=status)


_LINE_SCHEMA = intake.ChargeLine.model_json_schema(ref_template="#/components/schemas/{model}")
_BULK_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": _LINE_SCHEMA, "maxItems": intake.MAX_LINES}},
    "text/csv": {"schema": {"type": "string"}, "example": (
        "voucher_code;provider_reference;service_date;units;unit_price\n"
        "7KQ2M9XH4D=;visit-1;1.6.2026;1,5;27,50\n")},
}}}


@router.post(BULK_PATH, response_model=BulkResult, tags=["charges"], openapi_extra=_BULK_BODY, responses={
    **error_responses(400, 409, 413, 415, 422)})
async def charge_in_bulk(
    request: Request, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*CHARGERS, scope="none")],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Many charges at once, for the caller's provider: a JSON list of lines (at most 10,000) or a CSV file
    (`text/csv`; comma or semicolon, decimal comma or point, UTF-8 with or without BOM; columns
    `voucher_id` or `voucher_code`, `provider_reference`, `service_date`, `units`, optional `unit_price`
    (EUR) or `unit_price_cents`, `tariff`, `category`; lines after the 100,000th are refused
    `too_many_lines`). A CSV file is streamed: its lines are charged, 2,500 per transaction, as they
    arrive, and never held whole. Every line is answered: accepted, repeated or refused with its reason;
    good lines are accepted even when others are refused. A line holding a personal identity code is
    refused (`personal_identity_code`, its values not echoed), as is a line further on that is
    not UTF-8 (`encoding_not_utf8`). The file as a whole is refused for its encoding (400
    `encoding_not_utf8` when its start is not UTF-8) or its header (422 `csv_missing_column`,
    `csv_unknown_column`, `csv_header_missing`), before anything is charged; a file that cannot be read
    further on (`csv_malformed`, or larger than the limit: 413) is refused after the lines before it
    were charged: send it again, they come back `repeated`."""
    provider_id = principal.provider_id
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "text/csv":  # streamed: the guard has not read it (see csv_charges for its checks)
        return answer_of(*await idempotent_stream(
            sessions, clock, provider_id, idempotency_key, "charges.bulk", request.stream(),
            lambda body: _charge_csv(sessions, clock, principal, provider_id, body)))
    if media == "application/json" or media.endswith("+json"):
        raw = await request.body()  # the guard has read it already (to look for personal identity codes)
        try:
            items = json.loads(raw)
        except ValueError:
            raise DomainError("malformed_json", "the body is not JSON", status_code=400) from None
        if not isinstance(items, list):
            raise DomainError("invalid_request", "the body must be a JSON list of charge lines")
        if len(items) > intake.MAX_LINES:
            raise DomainError("too_many_lines", f"a bulk may have at most {intake.MAX_LINES} lines",
                              max_lines=intake.MAX_LINES, lines=len(items))

        async def answer() -> tuple[int, object]:
            return 200, await intake.charge_bulk(sessions, clock, principal, provider_id, intake.json_lines(items))

        return answer_of(*await idempotent(sessions, clock, provider_id, idempotency_key, "charges.bulk",
                                           lambda: items, answer))
    raise DomainError("unsupported_media_type", "send application/json or text/csv", status_code=415)


async def _charge_csv(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                      body: AsyncIterator[bytes]) -> tuple[int, object]:
    lines = intake.stream_csv_lines(body)
    # the header (and the encoding of the file's start) is checked before anything is charged
    first = await anext(lines, None)
    return 200, await intake.charge_bulk(sessions, clock, principal, provider_id, _chain(first, lines))


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:  # noqa: ANN001
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def idempotent_stream(sessions, clock: Clock, provider_id: str,  # noqa: ANN001
                            key: intake.IdempotencyKey | None,
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
    replay = await intake.begin_idempotent(sessions, clock, provider_id, key, operation, None)
    hasher = intake.stream_hash(operation)
    if replay is not None:
        async for chunk in body:
            hasher.update(chunk)
        if replay.request_hash != digest_text(hasher):
            raise intake.key_reused()
        return replay.status_code, replay.body

    async def hashed() -> AsyncIterator[bytes]:
        async for chunk in body:
            hasher.update(chunk)
            yield chunk

    try:
        status, out = await answer(hashed())
    except BaseException:
        await intake.finish_idempotent(sessions, provider_id, key, None)
        raise
    await intake.finish_idempotent(sessions, provider_id, key, status, out, request_hash=digest_text(hasher))
    return status, out


@router.post("/charges/{charge_id}/cancel", response_model=ChargePublic, tags=["charges"],
             responses=error_responses(404, 409))
async def cancel_charge(
    charge_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*CHARGERS)],
) -> ChargePublic:
    """The provider cancels a charge of its own that is not settled yet: its ledger entry is reversed and
    `ChargeCancelled` announced; cancelling it again answers the cancelled charge. A settled charge: 409
    `charge_settled` (a correction after settlement is the settlement's)."""
    charge, _ = await intake.cancel_charge(sessions, clock, principal, charge_id)
    return ChargePublic.of(charge)


# ------------------------------------------------------------------ for POST /charges (api.py)
SINGLE_RESPONSES = {**created_or_repeated(ChargePublic, 404, 409, 422)}


async def charge_once(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                      key: intake.IdempotencyKey | None,
                      body: BaseModel, charge: Callable[[], Awaitable[tuple[object, bool]]]) -> JSONResponse:
    """POST /charges under an Idempotency-Key: 201 new, 200 the same provider reference again."""
    async def answer() -> tuple[int, object]:
        c, new = await charge()
        return (201 if new else 200), ChargePublic.of(c).model_dump(mode="json")

    return answer_of(*await idempotent(sessions, clock, provider_id, key, "charges.create",
                                       lambda: body.model_dump(mode="json"), answer))
