"""Consumers: each its own durable quorum queue bound to the routing keys it needs, with a
dead-letter exchange and queue and an explicit ``x-delivery-limit``.

Messages are handled in batches, one transaction per batch (inbox claim + every effect), then
acknowledged; when a batch fails, its messages are retried one by one so that a single bad message
cannot hold up the others. A message that can never be processed (bad JSON, bad envelope, data
that breaks its contract, ``PermanentMessageError``) is put on the dead-letter queue at once with
the reason in the ``x-seteli-reason`` header. A handler failing for other reasons is retried with
a growing delay; on its last allowed delivery it is dead-lettered with the reason; the broker's
own delivery limit is the backstop.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Awaitable, Callable

from aio_pika import ExchangeType
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import inbox
from .audit import record_bus
from .bus import Bus, quorum_queue_arguments
from .errors import PermanentMessageError
from .events import Envelope, Event, routing_keys_of
from .logging import bind_correlation, get_logger
from .privacy import find_in

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope, Event], Awaitable[None]]
#: handles a run of events of one type in one call (one statement for many effects); it must not
#: record outgoing events, whose correlation would be ambiguous
BatchHandler = Callable[[AsyncSession, list[tuple[Envelope, Event]]], Awaitable[None]]
REASON_HEADER = "x-seteli-reason"
DELIVERIES_HEADER = "x-seteli-deliveries"
#: a message carrying a personal identity code: dead-lettered at once, without its body
PRIVACY_REASON = "personal_identity_code_refused"  # the DLQ (a quorum queue) resets x-delivery-count


@dataclass
class Parsed:
    message: AbstractIncomingMessage
    envelope: Envelope
    event: Event
    handler: Handler


class Consumer:
    def __init__(
        self,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        name: str,
        handlers: dict[str, Handler],
        *,
        bind_keys: list[str] | None = None,
        fallback: Handler | None = None,
        prefetch: int = 256,
        batch_size: int = 128,
        delivery_limit: int = 5,
        audit: bool = False,
        batch_handlers: dict[str, BatchHandler] | None = None,
    ):
        self.bus = bus
        self.sessions = sessions
        self.name = name  # the queue name, also the inbox's consumer name
        self.handlers = handlers  # event type -> handler
        self.batch_handlers = batch_handlers or {}  # event type -> handler of a run of such events
        self.bind_keys = bind_keys or routing_keys_of({**handlers, **self.batch_handlers})
        self.fallback = fallback  # for event types without their own handler (e.g. reporting's archive)
        self.prefetch = prefetch
        self.batch_size = batch_size
        self.delivery_limit = delivery_limit
        self.audit = audit  # record each consumed event in the service's audit trail
        self.queue: AbstractQueue | None = None  # kept: aio-pika restores only queues still referenced
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.name}.dlq"

    async def declare(self) -> AbstractQueue:
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await channel.declare_exchange(self.bus.settings.exchange_name, ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(self.bus.dlx_name, ExchangeType.DIRECT, durable=True)
        dlq = await channel.declare_queue(
            self.dead_letter_queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=self.name)
        queue = await channel.declare_queue(
            self.name, durable=True,
            arguments=quorum_queue_arguments(self.bus.dlx_name, self.name, self.delivery_limit),
        )
        for key in self.bind_keys:
            await queue.bind(exchange, routing_key=key)
        self.queue = queue
        return queue

    async def start(self) -> None:
        if self.queue is None:
            await self.declare()
        self._worker = asyncio.create_task(self._work(), name=f"consumer:{self.name}")
        await self.queue.consume(self._on_message)

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for t in list(self._pending):
            t.cancel()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._buffer.put(message)

    async def _work(self) -> None:
        while True:
            first = await self._buffer.get()
            batch = [first]
            await asyncio.sleep(0)  # let messages already arriving join the batch
            while len(batch) < self.batch_size and not self._buffer.empty():
                batch.append(self._buffer.get_nowait())
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (never let the consumer die)
                log.error("consumer.batch_crashed", consumer=self.name, error=repr(exc))
                for m in batch:
                    await self._retry_later(m, repr(exc))

    # ------------------------------------------------------------------ processing
    def _parse(self, message: AbstractIncomingMessage) -> Parsed | str | None:
        """A Parsed message, a reason string for a poison message, or None to ignore it."""
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError as exc:
            return f"bad_envelope: {str(exc)[:500]}"
        found = find_in([envelope.data, envelope.subject, envelope.source, envelope.correlationid,
                         envelope.causationid])
        if found:
            return PRIVACY_REASON if found[1] == "personal_identity_code_refused" else f"contract_violation: {found[1]}"
        handler = self.handlers.get(envelope.type) or self.batch_handlers.get(envelope.type)
        if handler is None:
            handler = self.fallback
            if handler is None:
                return None
        try:
            event = envelope.event()
        except KeyError:
            event = None  # unknown type passed to the fallback as a bare envelope
        except ValidationError as exc:
            return f"contract_violation: {str(exc)[:500]}"
        return Parsed(message, envelope, event, handler)

    async def _process(self, batch: list[AbstractIncomingMessage]) -> None:
        good: list[Parsed] = []
        for m in batch:
            parsed = self._parse(m)
            if parsed is None:
                await m.ack()
            elif isinstance(parsed, str):
                await self._dead_letter(m, parsed)
            else:
                good.append(parsed)
        if not good:
            return
        try:
            await self._apply(good)
        except Exception as exc:  # noqa: BLE001
            if len(good) == 1:
                await self._failed(good[0], exc)
                return
            for p in good:  # find the bad one: each on its own
                try:
                    await self._apply([p])
                except Exception as one_exc:  # noqa: BLE001
                    await self._failed(p, one_exc)
                    continue
                await p.message.ack()
            return
        await self._ack(good)

    async def _apply(self, items: list[Parsed]) -> None:
        async with self.sessions() as session:
            async with session.begin():
                fresh = await inbox.claim(session, self.name, [p.envelope.id for p in items])
                todo = []
                for p in items:
                    if p.envelope.id in fresh:
                        fresh.discard(p.envelope.id)  # a duplicate inside the batch runs once
                        todo.append(p)
                i = 0
                while i < len(todo):
                    p = todo[i]
                    bind_correlation(p.envelope.correlationid, causation_id=p.envelope.id)
                    batch_handler = self.batch_handlers.get(p.envelope.type)
                    if batch_handler is None:
                        await p.handler(session, p.envelope, p.event)
                        i += 1
                        continue
                    j = i
                    while j < len(todo) and todo[j].envelope.type == p.envelope.type:
                        j += 1  # a run of the same type, in delivery order
                    await batch_handler(session, [(q.envelope, q.event) for q in todo[i:j]])
                    i = j
                if self.audit:
                    await record_bus(session, [(p.envelope, p.message.user_id) for p in todo])

    async def _ack(self, items: list[Parsed]) -> None:
        """Acknowledge a processed batch: one cumulative ack unless earlier deliveries still wait
        for a delayed retry (a cumulative ack would take them too)."""
        if not self._pending:
            await items[-1].message.ack(multiple=True)
        else:
            for p in items:
                await p.message.ack()

    async def _failed(self, p: Parsed, exc: Exception) -> None:
        if isinstance(exc, PermanentMessageError):
            await self._dead_letter(p.message, exc.reason)
        else:
            await self._retry_later(p.message, repr(exc))

    def _delivery_count(self, message: AbstractIncomingMessage) -> int:
        """Earlier deliveries of this message (quorum queues count them in x-delivery-count)."""
        return int((message.headers or {}).get("x-delivery-count", 0) or 0)

    async def _retry_later(self, message: AbstractIncomingMessage, error: str) -> None:
        count = self._delivery_count(message)
        if count + 1 >= self.delivery_limit:
            await self._dead_letter(message, f"failed {count + 1} times: {error[:500]}")
            return
        delay = min(5.0, 0.1 * 2**count)
        log.warning("consumer.retry", consumer=self.name, message_id=message.message_id, attempt=count + 1,
                    delay=delay, error=error[:300])

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await message.nack(requeue=True)
            except Exception as e:  # noqa: BLE001  (channel gone: the broker redelivers anyway)
                log.warning("consumer.nack_failed", error=repr(e))

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        log.error("consumer.dead_lettered", consumer=self.name, message_id=message.message_id, reason=reason[:300])
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        headers["x-seteli-consumer"] = self.name
        headers[DELIVERIES_HEADER] = self._delivery_count(message) + 1
        body = message.body
        if reason == PRIVACY_REASON:
            # personal data is kept nowhere, a dead-letter queue included: only what identifies the message
            body = json.dumps({"removed": "the message carried a personal identity code",
                               "message_id": message.message_id, "type": message.type}).encode()
        try:
            await self.bus.publish(
                body, self.name, message_id=message.message_id or "", type_=message.type,
                correlation_id=message.correlation_id, headers=headers, dead_letter=True,
            )
        except Exception as exc:  # noqa: BLE001  (keep it on the main queue rather than lose it)
            log.error("consumer.dead_letter_failed", error=repr(exc))
            await message.nack(requeue=True)
            return
        await message.ack()
