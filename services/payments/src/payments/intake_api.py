"""Charge intake over HTTP: bulk charges (JSON or CSV), Idempotency-Key, a provider cancelling its
charge. Parse, authorise, call a use case (``intake``)."""
from __future__ import annotations

import json
from typing import Annotated, Awaitable, Callable

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from seteli_shared.auth import Principal, Role, require
from seteli_shared.clock import Clock, ClockDep
from seteli_shared.errors import DomainError
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from . import csv_charges, intake
from .api import ChargePublic

router = APIRouter()
CHARGERS = (Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM)
BULK_PATH = "/charges/bulk"
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, description=(
    "the same key with the same request answers the first answer again; kept 24 hours per provider"))]


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


async def idempotent(sessions, clock: Clock, provider_id: str, key: str | None, operation: str,  # noqa: ANN001
                     fingerprint: Callable[[], object], answer: Callable[[], Awaitable[tuple[int, object]]]
                     ) -> tuple[int, object]:
    """Run ``answer`` under the caller's Idempotency-Key (if it sent one): the first answer is kept and
    replayed for the same request; a final refusal is kept too (a retryable one frees the key)."""
    if key is None:
        return await answer()
    intake.check_key(key)
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
    (EUR) or `unit_price_cents`, `tariff`, `category`; lines after the 10,000th are refused `too_many_lines`).
    Every line is answered: accepted, repeated or refused with its reason; good lines are accepted even when
    others are refused. The file as a whole is refused for its encoding (400 `encoding_not_utf8`) or its
    header (422 `csv_missing_column`, `csv_unknown_column`, `csv_header_missing`)."""
    provider_id = principal.provider_id
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()  # the guard has read it already (to look for personal identity codes)
    if media == "text/csv":
        lines = intake.csv_lines(csv_charges.rows(raw[i:i + 65536] for i in range(0, len(raw), 65536)))
        # the header (and the encoding) is checked before anything is charged
        first = _peek(lines)
        fingerprint = lambda: raw  # noqa: E731
    elif media == "application/json" or media.endswith("+json"):
        try:
            items = json.loads(raw)
        except ValueError:
            raise DomainError("malformed_json", "the body is not JSON", status_code=400) from None
        if not isinstance(items, list):
            raise DomainError("invalid_request", "the body must be a JSON list of charge lines")
        if len(items) > intake.MAX_LINES:
            raise DomainError("too_many_lines", f"a bulk may have at most {intake.MAX_LINES} lines",
                              max_lines=intake.MAX_LINES, lines=len(items))
        first = intake.json_lines(items)
        fingerprint = lambda: items  # noqa: E731
    else:
        raise DomainError("unsupported_media_type", "send application/json or text/csv", status_code=415)

    async def answer() -> tuple[int, object]:
        return 200, await intake.charge_bulk(sessions, clock, principal, provider_id, first)

    return answer_of(*await idempotent(sessions, clock, provider_id, idempotency_key, "charges.bulk", fingerprint,
                                       answer))


def _peek(lines):  # noqa: ANN001, ANN202
    """Read the first line now (so that the file's encoding and header are refused before any charge),
    then go on with the rest."""
    it = iter(lines)
    try:
        head = next(it)
    except StopIteration:
        return iter(())

    def chained():  # noqa: ANN202
        yield head
        yield from it
    return chained()


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


async def charge_once(sessions, clock: Clock, principal: Principal, provider_id: str, key: str | None,  # noqa: ANN001
                      body: BaseModel, charge: Callable[[], Awaitable[tuple[object, bool]]]) -> JSONResponse:
    """POST /charges under an Idempotency-Key: 201 new, 200 the same provider reference again."""
    async def answer() -> tuple[int, object]:
        c, new = await charge()
        return (201 if new else 200), ChargePublic.of(c).model_dump(mode="json")

    return answer_of(*await idempotent(sessions, clock, provider_id, key, "charges.create",
                                       lambda: body.model_dump(mode="json"), answer))
