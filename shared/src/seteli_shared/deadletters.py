"""Dead-lettered messages as an operator's tool: list, show, replay and discard what a service's consumers put
on their dead-letter queues (``<consumer queue>.dlq``, bound to ``<ns>.dlx`` under the consumer queue's name,
see ``consumer.Consumer``).

A queue cannot be browsed in AMQP: the messages are taken with ``basic.get`` on a channel of this tool's own
without acknowledging them, and whatever is not acted on goes back to the queue when that channel closes
(``basic.recover`` semantics: the broker requeues every unacknowledged message of a closed channel). A message
is named by its message id (or, lacking one, ``sha256:<digest of its body>``).

- **show** gives the message's identity, reason, attempts, consumer and AMQP headers; never its body (it may
  hold personal data a reason names), and a header value that carries a personal identity code is left out.
- **replay** publishes the message, as it was (body, message id, type, correlation id; its ``traceparent``
  header kept), back to its consumer's queue through the dead-letter exchange (routing key ``replay.<queue>``,
  which only that queue is bound to: a service's broker user may write there), with publisher confirms, then
  acknowledges its dead-letter copy: at least once. The consumer's inbox drops a message it has already
  processed, so replaying one twice (or one whose twin was processed) changes nothing. A message whose body
  was removed because it carried personal data cannot be replayed (``body_removed``).
- **discard** acknowledges the dead-letter copy: the message is gone.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from .bus import Bus, replay_key
from .errors import DomainError
from .consumer import DEAD_LETTERED_AT_HEADER, DELIVERIES_HEADER, PRIVACY_REASON, REASON_HEADER
from .logging import get_logger
from .privacy import find_in

log = get_logger(__name__)

CONSUMER_HEADER = "x-seteli-consumer"
REPLAYS_HEADER = "x-seteli-replays"
#: headers the broker or the dead-lettering added: not carried into a replay (the queue counts anew)
_DROPPED_ON_REPLAY = {"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                      "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
                      REASON_HEADER, DELIVERIES_HEADER, CONSUMER_HEADER, DEAD_LETTERED_AT_HEADER}
#: at most this many messages are looked at in one queue by one action
SCAN_LIMIT = 10_000
#: how long a scan waits for the messages it gave back to be in their queue again
RETURN_WAIT_SECONDS = 5.0


#: the HTTP status of each refusal
_STATUS = {"dead_letter_not_found": 404, "unknown_queue": 404, "body_removed": 409, "broker_unavailable": 503}


class DeadLetterError(DomainError):
    """An action on dead letters refused, with its machine-readable reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message, status_code=_STATUS.get(reason, 422))


@dataclass(frozen=True)
class Filter:
    """Which dead letters an action takes: all of them, or those matching every given part."""

    queue: str | None = None  # the consumer's queue (its dead-letter queue is ``<queue>.dlq``)
    type: str | None = None  # the message's type, exactly
    reason: str | None = None  # a part of its reason
    message_id: str | None = None

    def matches(self, letter: "DeadLetter") -> bool:
        return ((self.queue is None or letter.queue == self.queue)
                and (self.type is None or letter.type == self.type)
                and (self.reason is None or self.reason in letter.reason)
                and (self.message_id is None or letter.id == self.message_id))


@dataclass
class DeadLetter:
    """A dead-lettered message as the operator sees it: never its body."""

    id: str  # the message id, or sha256:<digest of the body> when it has none
    queue: str  # the consumer queue it came from (where a replay goes)
    dead_letter_queue: str
    type: str | None
    routing_key: str | None  # the routing key it was first published with, when the broker recorded it
    correlation_id: str | None
    reason: str
    attempts: int
    dead_lettered_at: datetime | None
    replays: int
    body_bytes: int
    headers: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """AMQP header values as JSON can carry them."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _safe_headers(headers: dict) -> dict[str, Any]:
    """The headers, each one whose name or value carries a personal identity code left out."""
    out = {}
    for k, v in headers.items():
        plain = _plain(v)
        if find_in([str(k), plain]) is None:
            out[str(k)] = plain
    return out


def _first_death(headers: dict) -> dict:
    deaths = headers.get("x-death") or []
    return deaths[0] if deaths and isinstance(deaths[0], dict) else {}


def describe(message: AbstractIncomingMessage, dead_letter_queue: str) -> DeadLetter:
    headers = dict(message.headers or {})
    death = _first_death(headers)
    queue = _plain(headers.get(CONSUMER_HEADER)) or _plain(death.get("queue")) or dead_letter_queue.removesuffix(".dlq")
    reason = _plain(headers.get(REASON_HEADER))
    if not reason:  # dead-lettered by the broker itself (its delivery limit): x-death says why
        reason = f"broker: {_plain(death.get('reason')) or 'unknown'}"
    attempts = headers.get(DELIVERIES_HEADER)
    if attempts is None:  # dead-lettered by the broker: its x-death count (x-delivery-count is the DLQ's own now)
        attempts = int(death.get("count") or 1)
    keys = death.get("routing-keys") or []
    routing_key = _plain(keys[0]) if keys else None
    at = death.get("time")
    if not isinstance(at, datetime) and headers.get(DEAD_LETTERED_AT_HEADER):
        try:
            at = datetime.fromisoformat(str(_plain(headers[DEAD_LETTERED_AT_HEADER])))
        except ValueError:
            at = None
    if find_in([reason]) is not None:
        reason = "(reason withheld: it carried a personal identity code)"
    return DeadLetter(
        id=message.message_id or f"sha256:{hashlib.sha256(message.body).hexdigest()[:32]}",
        queue=str(queue), dead_letter_queue=dead_letter_queue, type=message.type,
        routing_key=routing_key or None, correlation_id=message.correlation_id,
        reason=str(reason), attempts=int(attempts), dead_lettered_at=at if isinstance(at, datetime) else None,
        replays=int(headers.get(REPLAYS_HEADER) or 0), body_bytes=len(message.body),
        headers=_safe_headers({k: v for k, v in headers.items() if k != "x-delivery-count"}))


class DeadLetters:
    """The dead-letter queues of one service's consumers (``queues``: the consumer queues' names)."""

    def __init__(self, bus: Bus, queues: Iterable[str]):
        self.bus = bus
        self.queues = list(queues)
        self._lock = asyncio.Lock()  # one scan at a time in this process: a second would see an emptied queue

    @staticmethod
    def dead_letter_queue(queue: str) -> str:
        return f"{queue}.dlq"

    async def _channel(self) -> AbstractChannel:
        if self.bus.connection is None:
            raise DeadLetterError("broker_unavailable", "the service has no connection to the broker")
        return await self.bus.connection.channel(publisher_confirms=True, on_return_raises=True)

    async def counts(self) -> dict[str, int]:
        """Each consumer queue's number of dead letters."""
        channel = await self._channel()
        try:
            out = {}
            for queue in self.queues:
                declared = await channel.declare_queue(self.dead_letter_queue(queue), passive=True)
                out[queue] = declared.declaration_result.message_count or 0
            return out
        finally:
            await channel.close()

    async def _scan(self, wanted: Filter, act: Callable[[AbstractChannel, AbstractIncomingMessage, DeadLetter],
                                                       "asyncio.Future | Any"] | None,
                    limit: int) -> list[DeadLetter]:
        """The dead letters ``wanted`` takes (at most ``limit``), each passed to ``act`` when given (which
        acknowledges it); the others go back to their queue when the scan's channel closes. A quorum queue takes
        them back a moment after the close: the scan waits (at most ``RETURN_WAIT_SECONDS``) until its queues
        hold at least what they held before, less what it acknowledged, so that the next action sees them all."""
        if wanted.queue is not None and wanted.queue not in self.queues:
            raise DeadLetterError("unknown_queue", f"no consumer queue {wanted.queue!r} in this service")
        async with self._lock:
            channel = await self._channel()
            found: list[DeadLetter] = []
            #: dead-letter queue -> messages it must hold again once the scan's channel is closed
            expected: dict[str, int] = {}
            try:
                for queue in self.queues:
                    if wanted.queue is not None and queue != wanted.queue:
                        continue
                    dlq = await channel.declare_queue(self.dead_letter_queue(queue), passive=True)
                    # what it holds now, less what this scan acknowledges (a quorum queue counts the messages
                    # taken and not yet acknowledged too, and loses sight of them a moment after a channel closes)
                    expected[dlq.name] = dlq.declaration_result.message_count or 0
                    for _ in range(SCAN_LIMIT):
                        message = await dlq.get(no_ack=False, fail=False)
                        if message is None:
                            break
                        letter = describe(message, dlq.name)
                        if not wanted.matches(letter):
                            continue
                        if act is not None:
                            await act(channel, message, letter)
                            expected[dlq.name] -= 1
                        found.append(letter)
                        if len(found) >= limit:
                            return found
                return found
            finally:
                await channel.close()  # what was taken and not acknowledged goes back
                await self._until_returned(expected)

    async def _until_returned(self, expected: dict[str, int]) -> None:
        channel = await self._channel()
        try:
            deadline = asyncio.get_running_loop().time() + RETURN_WAIT_SECONDS
            for name, count in expected.items():
                while True:
                    declared = await channel.declare_queue(name, passive=True)
                    if (declared.declaration_result.message_count or 0) >= count:
                        break
                    if asyncio.get_running_loop().time() > deadline:
                        log.warning("dead_letter.return_slow", queue=name, expected=count)
                        return
                    await asyncio.sleep(0.02)
        finally:
            await channel.close()

    async def list(self, wanted: Filter = Filter(), limit: int = 100) -> list[DeadLetter]:
        return await self._scan(wanted, None, limit)

    async def show(self, message_id: str) -> DeadLetter:
        found = await self._scan(Filter(message_id=message_id), None, 1)
        if not found:
            raise DeadLetterError("dead_letter_not_found", f"no dead letter {message_id!r}")
        return found[0]

    async def replay(self, wanted: Filter, limit: int = SCAN_LIMIT) -> list[DeadLetter]:
        """Put the dead letters ``wanted`` takes back on their consumers' queues (see the module's text)."""

        async def again(channel: AbstractChannel, message: AbstractIncomingMessage, letter: DeadLetter) -> None:
            if letter.reason == PRIVACY_REASON:
                raise DeadLetterError("body_removed", f"{letter.id}: its body was removed (it carried a personal "
                                      "identity code): it cannot be replayed, only discarded")
            headers = {k: v for k, v in (message.headers or {}).items() if k not in _DROPPED_ON_REPLAY}
            headers[REPLAYS_HEADER] = letter.replays + 1
            dlx = await channel.get_exchange(self.bus.dlx_name, ensure=False)
            await dlx.publish(Message(
                message.body, delivery_mode=DeliveryMode.PERSISTENT, content_type=message.content_type,
                message_id=message.message_id, type=message.type, correlation_id=message.correlation_id,
                app_id=message.app_id, headers=headers,
                # the broker checks a user id against the publishing user: kept only when that is this service
                user_id=message.user_id if message.user_id == self.bus.user else None), routing_key=replay_key(letter.queue),
                mandatory=True,
                timeout=self.bus.settings.publish_timeout_seconds)
            await message.ack()
            log.info("dead_letter.replayed", queue=letter.queue, message_id=letter.id, type=letter.type)

        if wanted.message_id is not None:
            limit = 1
        return await self._scan(wanted, again, limit)

    async def discard(self, wanted: Filter, limit: int = SCAN_LIMIT) -> list[DeadLetter]:
        async def drop(_channel: AbstractChannel, message: AbstractIncomingMessage, letter: DeadLetter) -> None:
            await message.ack()
            log.info("dead_letter.discarded", queue=letter.queue, message_id=letter.id, type=letter.type)

        if wanted.message_id is not None:
            limit = 1
        return await self._scan(wanted, drop, limit)
