"""The operator's endpoints of every service for its dead-lettered messages (``deadletters``): list, show,
replay and discard, one, filtered or all; each replay and discard recorded in the audit trail (one row per
message, its id the resource). Operator staff only."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, model_validator

from . import audit
from .auth import Principal, Role, require
from .db import unit_of_work
from .deadletters import DeadLetter, DeadLetterError, DeadLetters, Filter
from .schemas import Count, RequestModel
from .web import error_responses

router = APIRouter(tags=["operations"])
Operator = Annotated[Principal, require(Role.OPERATOR, scope="none")]
QueueFilter = Annotated[str | None, Query(max_length=200, description="one consumer queue's only")]
TypeFilter = Annotated[str | None, Query(max_length=200, description="messages of this type only")]
MessageId = Annotated[str, Path(max_length=200)]
ReasonFilter = Annotated[str | None, Query(max_length=200, description="messages whose reason contains this")]


def dead_letters_of(request: Request) -> DeadLetters:
    runtime = request.app.state.runtime
    consumers = [c for c in [runtime.consumer, *runtime.extra_consumers] if c is not None]
    return DeadLetters(runtime.bus, [c.name for c in consumers])


class DeadLetterPublic(BaseModel):
    id: str = Field(description="the message id (or `sha256:<digest>` of a message without one)")
    queue: str = Field(description="the consumer queue it was dead-lettered from, where a replay puts it")
    dead_letter_queue: str
    type: str | None
    routing_key: str | None
    correlation_id: str | None
    reason: str = Field(description="why: `failed <n> times: <error>`, `contract_violation: ...`, "
                        "`bad_envelope: ...`, a handler's refusal, `personal_identity_code`, or `broker: "
                        "delivery_limit` when the broker's own limit took it")
    attempts: int = Field(description="deliveries to its consumer before it was dead-lettered")
    dead_lettered_at: datetime | None
    replays: int = Field(description="how often it was replayed before")
    body_bytes: int
    headers: dict[str, Any] = Field(description="its AMQP headers (none carrying a personal identity code); never "
                                    "its body")


def _public(letter: DeadLetter) -> DeadLetterPublic:
    return DeadLetterPublic(**vars(letter))


class QueueCount(BaseModel):
    queue: str
    dead_letter_queue: str
    messages: int


class DeadLetterList(BaseModel):
    queues: list[QueueCount]
    items: list[DeadLetterPublic] = Field(description="the first `limit` dead letters matching the filter")


@router.get("/ops/dead-letters", response_model=DeadLetterList, responses=error_responses(401, 403, 404))
async def list_dead_letters(request: Request, _principal: Operator, queue: QueueFilter = None,
                            type: TypeFilter = None, reason: ReasonFilter = None,  # noqa: A002
                            limit: Annotated[Count, Query(ge=1, le=1000)] = 100) -> DeadLetterList:
    """The service's dead-letter queues with their counts, and the dead letters (oldest first) matching the
    filter. Reading leaves them where they are."""
    letters = dead_letters_of(request)
    found = await letters.list(Filter(queue=queue, type=type, reason=reason), limit)
    counts = await letters.counts()  # after the listing has given its letters back
    return DeadLetterList(queues=[QueueCount(queue=q, dead_letter_queue=letters.dead_letter_queue(q), messages=n)
                                  for q, n in counts.items()], items=[_public(x) for x in found])


@router.get("/ops/dead-letters/{message_id}", response_model=DeadLetterPublic,
            responses=error_responses(401, 403, 404))
async def show_dead_letter(message_id: MessageId, request: Request,
                           _principal: Operator) -> DeadLetterPublic:
    """One dead letter: identity, reason, attempts, headers; never its body."""
    return _public(await dead_letters_of(request).show(message_id))


class Selection(RequestModel):
    """Which dead letters: those matching every given part, or `all`."""

    queue: str | None = Field(default=None, max_length=200)
    type: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=200)
    all: bool = Field(default=False, description="every dead letter of the service (required without a filter)")

    @model_validator(mode="after")
    def _says_which(self) -> "Selection":
        if not self.all and self.queue is None and self.type is None and self.reason is None:
            raise ValueError("name a queue, a type or a reason, or set all: true")
        return self


class Acted(BaseModel):
    action: str  # replayed | discarded
    count: int
    items: list[DeadLetterPublic]


async def _record(request: Request, principal: Principal, action: str, letters: list[DeadLetter]) -> None:
    async with unit_of_work(request.app.state.runtime.sessions) as session:
        for letter in letters:
            await audit.record(session, principal, action, "dead_letter", letter.id[:100], None)


async def _act(request: Request, principal: Principal, action: str, wanted: Filter) -> Acted:
    letters = dead_letters_of(request)
    done = await (letters.replay(wanted) if action == "replayed" else letters.discard(wanted))
    await _record(request, principal, f"dead_letter.{'replay' if action == 'replayed' else 'discard'}", done)
    return Acted(action=action, count=len(done), items=[_public(x) for x in done])


@router.post("/ops/dead-letters/{message_id}/replay", response_model=Acted,
             responses=error_responses(401, 403, 404, 409))
async def replay_dead_letter(message_id: MessageId, request: Request,
                             principal: Operator) -> Acted:
    """Put one dead letter back on its consumer's queue (after its cause is fixed). Its consumer's inbox
    drops it if it was processed already: a replay takes effect at most once. 404 when it is not (or no
    longer) dead-lettered."""
    acted = await _act(request, principal, "replayed", Filter(message_id=message_id))
    if not acted.count:
        raise DeadLetterError("dead_letter_not_found", f"no dead letter {message_id!r}")
    return acted


@router.post("/ops/dead-letters/replay", response_model=Acted, responses=error_responses(401, 403, 404, 409, 422))
async def replay_dead_letters(body: Selection, request: Request, principal: Operator) -> Acted:
    """Replay the dead letters the selection takes (a queue, a type, a reason, or all)."""
    return await _act(request, principal, "replayed", Filter(queue=body.queue, type=body.type, reason=body.reason))


@router.post("/ops/dead-letters/{message_id}/discard", response_model=Acted, responses=error_responses(401, 403, 404))
async def discard_dead_letter(message_id: MessageId, request: Request,
                              principal: Operator) -> Acted:
    """Drop one dead letter for good (recorded in the audit trail)."""
    acted = await _act(request, principal, "discarded", Filter(message_id=message_id))
    if not acted.count:
        raise DeadLetterError("dead_letter_not_found", f"no dead letter {message_id!r}")
    return acted


@router.post("/ops/dead-letters/discard", response_model=Acted, responses=error_responses(401, 403, 404, 422))
async def discard_dead_letters(body: Selection, request: Request, principal: Operator) -> Acted:
    """Drop the dead letters the selection takes (recorded in the audit trail, one row each)."""
    return await _act(request, principal, "discarded", Filter(queue=body.queue, type=body.type, reason=body.reason))
