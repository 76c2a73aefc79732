"""The charging room over HTTP: a charge, a bulk of charges (JSON or CSV), the caller's charges, a provider
cancelling its charge, corrections of settled charges. Parse, authorise, call a use case (``intake``,
``cancellation``, ``corrections``, ``reads``), each charge through the charge engine (``engine``)."""
from __future__ import annotations

import json
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from seteli_shared.auth import Principal, Role, TenantScope, acting_for_provider, ensure_visible, require, tenant_scope
from seteli_shared.clock import Clock, ClockDep
from seteli_shared.errors import DomainError
from seteli_shared.money import to_hundredths
from seteli_shared.schemas import BusinessDate, Page, PageDep
from seteli_shared.service import SessionsDep
from seteli_shared.uow import SessionUnitOfWork
from seteli_shared.web import error_responses

from ..common_api import READERS
from . import cancellation, corrections, idempotency, intake, reads
from .rows import AcceptedEvents
from .schemas import (BulkResult, ChargeCreate, ChargePublic, ChargeStatus, CorrectionCreate, CorrectionPublic,
                      IdempotencyKeyHeader)

router = APIRouter()
CHARGERS = (Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM)
#: who may correct a settled charge: the charge's provider (its staff or billing system), its funder's finance
CORRECTORS = (Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM, Role.FUNDER_FINANCE)
BULK_PATH = "/charges/bulk"


def answer_of(status: int, body: object) -> JSONResponse:
    return JSONResponse(body, status_code=status)


@router.post("/charges", status_code=201, response_model=ChargePublic, tags=["charges"], responses={
    200: {"model": ChargePublic, "description": "a retry with the same provider reference (or Idempotency-Key): "
          "the first charge"},
    **error_responses(404, 409, 422)})
async def charge_voucher(
    body: ChargeCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(Role.PROVIDER_CHARGER, Role.PROVIDER_BILLING_SYSTEM, scope="body")],
    idempotency_key: IdempotencyKeyHeader = None,
) -> ChargePublic:
    """A provider charges a voucher for a delivered service. Refusals are 4xx with a reason, among them
    422 `provider_suspended` / `provider_revoked` for a service delivered on or after the date its
    approval was suspended or revoked from (earlier services may still be charged),
    `price_above_registered_price` (the registered price in `details`) and `tariff_not_available`
    (a tariff asked for when no price list is in force on the service date). The answer says whether
    a registered price was found (`price_registered`)."""
    return await charge_request(sessions, clock, principal, body, idempotency_key)


async def charge_request(sessions, clock: Clock, principal: Principal, body: ChargeCreate,  # noqa: ANN001
                         idempotency_key: idempotency.IdempotencyKey | None) -> JSONResponse:
    """``POST /charges`` once its caller is authenticated and its body and headers validated: the route above,
    and ``shortcut.ChargeShortcut`` (the same request without FastAPI's dependency resolution)."""
    provider_id = acting_for_provider(principal, body.provider_id)
    line = intake.engine_line(0, body, provider_id)

    async def answer() -> tuple[int, object]:
        charge, new = await intake.charge_answer(sessions, clock, principal, line)
        return (201 if new else 200), charge

    if idempotency_key is None:
        # the answer as it is: FastAPI would check a ChargePublic against ChargePublic once more
        return answer_of(*await answer())
    return answer_of(*await idempotency.idempotent(sessions, clock, provider_id, idempotency_key, "charges.create",
                                                   lambda: body.model_dump(mode="json"), answer))


@router.get("/charges", response_model=Page[ChargePublic], tags=["charges"])
async def list_charges(
    sessions: SessionsDep, page: PageDep, scope: Annotated[TenantScope, tenant_scope(*READERS)],
    voucher_id: str | None = None, status: ChargeStatus | None = None,
    service_date_from: BusinessDate | None = None, service_date_to: BusinessDate | None = None,
    provider_id: str | None = None, funder_id: str | None = None,
) -> Page[ChargePublic]:
    """Charges in the order they were accepted: operator staff see all, a funder's staff their funder's,
    a provider's staff and systems their provider's (whatever the query asks)."""
    f = reads.ChargeFilter(voucher_id=voucher_id, status=status.value if status else None,
                           service_date_from=service_date_from, service_date_to=service_date_to,
                           funder_id=funder_id, provider_id=provider_id)
    charges, cursor = await reads.charges_page(sessions, scope, f, page)
    return Page(items=[ChargePublic.of(c) for c in charges], next_cursor=cursor)


@router.get("/charges/{charge_id}", response_model=ChargePublic, tags=["charges"])
async def get_charge(
    charge_id: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS)],
) -> ChargePublic:
    charge = await reads.get_charge(sessions, charge_id)
    ensure_visible(principal, "charge", funder_id=charge.funder_id, provider_id=charge.provider_id)
    return ChargePublic.of(charge)


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
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Many charges at once, for the caller's provider: a JSON list of lines (at most 10,000) or a CSV file
    (`text/csv`; comma or semicolon, decimal comma or point, UTF-8 with or without BOM; columns
    `voucher_id` or `voucher_code`, `provider_reference`, `service_date`, `units`, optional `unit_price`
    (EUR) or `unit_price_cents`, `tariff`, `category`; lines after the 100,000th are refused
    `too_many_lines`). A CSV file is streamed: its lines are charged as they arrive (the first 2,500 in one
    transaction, then up to 10,000 a transaction), and never held whole. Every line is answered: accepted, repeated or refused with its reason;
    good lines are accepted even when others are refused. A line holding a personal identity code is
    refused (`personal_identity_code`, its values not echoed), as is a line further on that is
    not UTF-8 (`encoding_not_utf8`). The file as a whole is refused for its encoding (400
    `encoding_not_utf8` when its start is not UTF-8) or its header (422 `csv_missing_column`,
    `csv_duplicate_column`, `csv_header_missing`), before anything is charged. Columns the format does not
    have (a free-text note) are ignored, with one warning for the file in `warnings` (code
    `csv_unknown_columns_ignored`, the columns' names and positions); a file that cannot be read
    further on (`csv_malformed`, or larger than the limit: 413) is refused after the lines before it
    were charged: send it again, they come back `repeated`."""
    provider_id = principal.provider_id
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "text/csv":  # streamed: the guard has not read it (see csv_charges for its checks)
        return answer_of(*await idempotency.idempotent_stream(
            sessions, clock, provider_id, idempotency_key, "charges.bulk", request.stream(),
            lambda body: _charge_csv(sessions, clock, principal, provider_id, body,
                                     AcceptedEvents.of(request.app.state.settings))))
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
            return 200, await intake.charge_bulk(sessions, clock, principal, provider_id, intake.json_lines(items),
                                                 events=AcceptedEvents.of(request.app.state.settings))

        return answer_of(*await idempotency.idempotent(sessions, clock, provider_id, idempotency_key, "charges.bulk",
                                                       lambda: items, answer))
    raise DomainError("unsupported_media_type", "send application/json or text/csv", status_code=415)


async def _charge_csv(sessions, clock: Clock, principal: Principal, provider_id: str,  # noqa: ANN001
                      body: AsyncIterator[bytes], events: AcceptedEvents) -> tuple[int, object]:
    warnings: list[dict] = []
    lines = intake.stream_csv_lines(body, warnings=warnings)
    # the header (and the encoding of the file's start) is checked before anything is charged
    first = await anext(lines, None)
    result = await intake.charge_bulk(sessions, clock, principal, provider_id, _chain(first, lines), events=events)
    return 200, {**result, "warnings": warnings}


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:  # noqa: ANN001
    if first is not None:
        yield first
    async for item in rest:
        yield item


@router.post("/charges/{charge_id}/cancel", response_model=ChargePublic, tags=["charges"],
             responses=error_responses(404, 409))
async def cancel_charge(
    charge_id: str, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*CHARGERS)],
) -> ChargePublic:
    """The provider cancels a charge of its own that is not settled yet: its ledger entry is reversed and
    `ChargeCancelled` announced; cancelling it again answers the cancelled charge. A settled charge: 409
    `charge_settled` (a correction after settlement is the settlement's)."""
    charge, _ = await cancellation.cancel_charge(SessionUnitOfWork(sessions), clock, principal, charge_id)
    return ChargePublic.of(charge)


@router.post("/charges/{charge_id}/corrections", status_code=201, response_model=CorrectionPublic,
             tags=["charges"], responses=error_responses(404, 409, 422))
async def correct_charge(
    charge_id: str, body: CorrectionCreate, sessions: SessionsDep, clock: ClockDep,
    principal: Annotated[Principal, require(*CORRECTORS)],
    idempotency_key: IdempotencyKeyHeader = None,
):  # noqa: ANN201
    """Correct a settled charge: the whole of it (`reversal`) or fewer `units` / a lower `amount_cents`. The
    difference is a reversing ledger entry and `ChargeCorrected`; it is taken off the provider's next payout
    from the funder (a negative line on that statement, the fee given back with it; a payout never goes
    negative: what does not fit waits for the one after). Refusals: 409 `charge_not_settled` (cancel an
    unsettled charge instead), `charge_cancelled`, `charge_already_reversed`; 422
    `correction_increases_charge`, `correction_changes_nothing`. With an `Idempotency-Key` a retry answers
    the first answer."""
    reversal, units = body.reversal, None if body.units is None else to_hundredths(body.units)

    async def answer() -> tuple[int, object]:
        made = await corrections.correct_charge(SessionUnitOfWork(sessions), clock, principal, charge_id,
                                                reason=body.reason.value, reversal=reversal, units_x100=units,
                                                amount_cents=body.amount_cents)
        return 201, CorrectionPublic.of(made).model_dump(mode="json")

    key_owner = principal.provider_id or f"funder:{principal.funder_id}"
    return answer_of(*await idempotency.idempotent(
        sessions, clock, key_owner, idempotency_key, "charges.correct",
        lambda: {"charge_id": charge_id, **body.model_dump(mode="json")}, answer))


@router.get("/charges/{charge_id}/corrections", response_model=list[CorrectionPublic], tags=["charges"],
            responses=error_responses(404))
async def list_corrections(
    charge_id: str, sessions: SessionsDep, principal: Annotated[Principal, require(*READERS)],
) -> list[CorrectionPublic]:
    """The charge's corrections in the order they were made, each with the settlement that offset it."""
    return [CorrectionPublic.of(c) for c in await corrections.corrections_of(sessions, principal, charge_id)]
