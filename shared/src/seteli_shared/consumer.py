"""Consumers: each its own durable quorum queue bound to the routing keys it needs, with a
dead-letter exchange and queue and an explicit ``x-delivery-limit``.

Messages are handled in batches, one transaction per batch (inbox claim + every effect), then
acknowledged; when a batch fails, its messages are retried one by one so that a single bad message
cannot hold up the others. A message that can never be processed (bad JSON, bad envelope, data
that breaks its contract, ``PermanentMessageError``) is put on the dead-letter queue at once with
the reason in the ``x-seteli-reason`` header (an ``on_refused`` callback may first record an answer to
its sender, in a transaction of its own, once per message). A handler failing for other reasons is retried with
a growing delay; on its last allowed delivery it is dead-lettered with the reason; the broker's
own delivery limit is the backstop.

A consumer reads the domain events exchange unless it names another topic exchange of the namespace
(``exchange``, e.g. ``decisions``); ``contracts`` then says which model each message type's ``data``
must satisfy. Every message is checked for personal identity codes before anything else: every string of
its body, its properties and its AMQP headers (and, for messages from outside systems, ``whole_message_privacy``,
the body's raw text too); one carrying a code is dead-lettered at once without its body. Handlers find the
message being handled in ``current_delivery``.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, Tracer

from . import inbox, tracing
from .faults import CONNECTION_LOST, UNAVAILABLE, UNREACHABLE, database_fault
from .audit import record_bus
from .bus import Bus, quorum_queue_arguments, replay_key
from .errors import PermanentMessageError
from .events import Envelope, Event, ReceivedEnvelope, routing_keys_of
from .ids import digest_text
from .logging import bind_correlation, get_logger
from .metrics import metrics
from .privacy import REASON, body_cannot_hold_code, find_in, json_strings_cannot_hold_code, text_cannot_hold_code

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope, Event], Awaitable[None]]
#: handles a run of events of one type in one call (one statement for many effects); an outgoing event it
#: records must be made after ``bind_correlation`` of the item it answers (as ``vouchers.decisions.on_decisions``
#: does), else its correlation is ambiguous; the run's AMQP messages are in ``current_run``
BatchHandler = Callable[[AsyncSession, list[tuple[Envelope, Event]]], Awaitable[None]]
REASON_HEADER = "x-seteli-reason"
DELIVERIES_HEADER = "x-seteli-deliveries"
DEAD_LETTERED_AT_HEADER = "x-seteli-dead-lettered-at"
#: a message carrying a personal identity code: dead-lettered at once, without its body
#: the prefetch a consumer starts with, before it has seen how large its messages are (``held_bytes``)
FIRST_PREFETCH = 16
#: the database outages a consumer waits out with its batch held (``Consumer._apply_through_outages``); a statement
#: timeout is not one of them (a message whose work is too heavy must reach its delivery limit)
OUTAGE_CAUSES = (UNREACHABLE, CONNECTION_LOST, UNAVAILABLE)
OUTAGE_ATTEMPTS = 30
PRIVACY_REASON = REASON  # "personal_identity_code"; the DLQ (a quorum queue) resets x-delivery-count
#: the AMQP message a handler is handling (its ``user_id``, validated by the broker, and routing key)
current_delivery: ContextVar[AbstractIncomingMessage | None] = ContextVar("current_delivery", default=None)
#: the consumer handling it (its ``bus.settings`` are the service's settings)
current_consumer: ContextVar["Consumer | None"] = ContextVar("current_consumer", default=None)
#: the AMQP messages of the run a batch handler is handling, in the order of its items
current_run: ContextVar[list[AbstractIncomingMessage]] = ContextVar("current_run", default=[])


@dataclass
class Refused:
    """A message that can never be processed: why, and what could be read of it (the parsed JSON, if
    any). When it carried personal data, ``raw`` may be read only for values checked clean first (a
    reference that passes the contract's pattern); none of it may be stored or logged otherwise."""

    reason: str
    raw: Any = None
    error: ValidationError | None = None


#: called, in a transaction of its own and once per message, before a refused message is dead-lettered
OnRefused = Callable[[AsyncSession, AbstractIncomingMessage, Refused], Awaitable[None]]


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    return value if isinstance(value, str) else None


def describe(exc: ValidationError) -> str:
    """What is wrong with a message, by field and rule: never the values (they could be personal data)."""
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or '(message)'}: {e.get('msg', '')}"
             for e in exc.errors(include_input=False, include_url=False)]
    return "; ".join(parts)[:500]


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
        batch_bytes: int = 4 * 1024 * 1024,
        held_bytes: int = 64 * 1024 * 1024,
        batch_wait: float = 0.0,
        delivery_limit: int = 5,
        audit: bool = False,
        batch_handlers: dict[str, BatchHandler] | None = None,
        exchange: str | None = None,
        contracts: dict[str, type[BaseModel]] | None = None,
        whole_message_privacy: bool = False,
        on_refused: OnRefused | None = None,
        tracer: Tracer | None = None,
        envelope: type[ReceivedEnvelope] = ReceivedEnvelope,
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
        #: a batch also stops at this many bytes of bodies (a message listing thousands of facts, such as a
        #: ``charge.settled.v2``, is a batch's worth of work by itself); its first message is always taken
        self.batch_bytes = batch_bytes
        #: about the most bytes of bodies delivered and not yet settled: the broker's prefetch counts messages
        #: (2,000 ``charge.accepted.v2`` at ~420 kB would be 840 MB in the process after an outage), so the
        #: prefetch in force is ``held_bytes`` over the largest recent body, at most ``prefetch``; it starts at
        #: ``FIRST_PREFETCH`` (a backlog's first burst stays small) and is changed by basic.cancel, basic.qos and
        #: basic.consume when it should halve or can double (``_keep_flow``)
        self.held_bytes = held_bytes
        self._held = 0  # bytes delivered and not yet settled (tests, diagnostics)
        self._size = 0  # the largest recent body, decaying 1 % a message
        self._qos = min(prefetch, FIRST_PREFETCH)  # the prefetch in force
        self._channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._flow: asyncio.Task | None = None
        #: seconds a batch waits after its first message for more to join it (``CONSUMER_BATCH_WAIT_SECONDS``)
        self.batch_wait = batch_wait
        self.delivery_limit = delivery_limit
        self.audit = audit  # record each consumed event in the service's audit trail
        self.exchange = exchange  # another topic exchange of the namespace (``<ns>.<exchange>``) than the events'
        self.contracts = contracts  # message type -> model of its data (default: the domain events)
        self.whole_message_privacy = whole_message_privacy
        self.on_refused = on_refused
        #: the model a message's envelope is read with (``contracts``' consumers: one that knows the extension
        #: attributes of their messages, e.g. a decision's ``replymode``; a model of ``ReceivedEnvelope``'s rules)
        self.envelope = envelope
        #: a span per message, the child of its ``traceparent`` header (None: tracing off, no span made)
        self.tracer = tracer
        self.queue: AbstractQueue | None = None  # kept: aio-pika restores only queues still referenced
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.name}.dlq"

    async def declare(self) -> AbstractQueue:
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=self._qos)
        self._channel = channel
        exchange_name = (f"{self.bus.settings.bus_namespace}.{self.exchange}" if self.exchange
                         else self.bus.settings.exchange_name)
        exchange = await channel.declare_exchange(exchange_name, ExchangeType.TOPIC, durable=True)
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
        await queue.bind(dlx, routing_key=replay_key(self.name))  # the operator's replays (deadletters)
        self.queue = queue
        return queue

    async def start(self) -> None:
        if self.queue is None:
            await self.declare()
        self._worker = asyncio.create_task(self._work(), name=f"consumer:{self.name}")
        self._consumer_tag = await self.queue.consume(self._on_message)

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._flow is not None:
            self._flow.cancel()
            await asyncio.gather(self._flow, return_exceptions=True)
        for t in list(self._pending):
            t.cancel()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        size = len(message.body)
        self._held += size
        self._size = max(size, self._size * 99 // 100)
        await self._buffer.put(message)
        want = self._wanted_prefetch()
        if (want < self._qos or want >= 2 * self._qos) and (self._flow is None or self._flow.done()):
            self._flow = asyncio.create_task(self._keep_flow(), name=f"consumer-flow:{self.name}")

    def _wanted_prefetch(self) -> int:
        return max(1, min(self.prefetch, self.held_bytes // max(self._size, 1)))

    async def _keep_flow(self) -> None:
        """The prefetch in force made what the bodies' size wants (a new prefetch applies to a new consumer: the
        deliveries already sent to the old one still come and are handled as usual)."""
        while self._consumer_tag is not None:
            want = self._wanted_prefetch()
            if not (want < self._qos or want >= 2 * self._qos):
                return
            tag, self._consumer_tag = self._consumer_tag, None
            try:  # a robust queue forgets a consumer asked to cancel even if the request fails
                await self.queue.cancel(tag)
            except Exception as exc:  # noqa: BLE001  (the channel went, and the consumer with it)
                log.warning("consumer.prefetch_cancel_failed", consumer=self.name, error=repr(exc)[:300])
            while self._consumer_tag is None:
                try:
                    await self._channel.set_qos(prefetch_count=want)  # a robust channel restores it too
                    self._qos = want
                    self._consumer_tag = await self.queue.consume(self._on_message)
                except Exception as exc:  # noqa: BLE001  (the connection is moving: again once it is back)
                    log.warning("consumer.prefetch_failed", consumer=self.name, error=repr(exc)[:300])
                    await asyncio.sleep(1.0)
            log.info("consumer.prefetch", consumer=self.name, prefetch=want, body_bytes=self._size)

    async def _work(self) -> None:
        """Batches off the buffer, applied one after the other in delivery order. While one batch's transaction runs
        (mostly waiting on the database), the next is gathered and parsed (the privacy check and pydantic: CPU), so the
        two overlap; once the batch before is done, what arrived meanwhile tops the next one up to its limits, so a
        batch holds what it held before. The batches' order, transactions, acknowledgements and retries are as if
        each were parsed and applied in turn."""
        applying: asyncio.Task | None = None
        try:
            while True:
                first = await self._buffer.get()
                batch, size = [first], len(first.body)
                await asyncio.sleep(0)  # let messages already arriving join the batch
                loop = asyncio.get_running_loop()
                until = loop.time() + self.batch_wait
                while len(batch) < self.batch_size and size < self.batch_bytes:
                    if self._buffer.empty():
                        left = until - loop.time()
                        if left <= 0:
                            break
                        await asyncio.sleep(min(left, 0.01))  # a trickle joins the batch for up to batch_wait
                        continue
                    batch.append(self._buffer.get_nowait())
                    size += len(batch[-1].body)
                parsed = await self._parse_all(batch, applying)
                if applying is not None:
                    await applying  # (it never raises: _apply_batch settles every message of its batch)
                    applying = None
                    more = []
                    while len(batch) + len(more) < self.batch_size and size < self.batch_bytes \
                            and not self._buffer.empty():
                        more.append(self._buffer.get_nowait())
                        size += len(more[-1].body)
                    if more:
                        batch += more
                        parsed = None if parsed is None else parsed + (await self._parse_all(more, None) or [])
                        if parsed is not None and len(parsed) != len(batch):
                            parsed = None
                applying = asyncio.create_task(self._apply_batch(batch, parsed, size),
                                               name=f"consumer-batch:{self.name}")
        finally:
            if applying is not None:
                applying.cancel()
                await asyncio.gather(applying, return_exceptions=True)

    async def _parse_all(self, batch: list[AbstractIncomingMessage], beside: asyncio.Task | None
                         ) -> list[Parsed | Refused | None] | None:
        """Each message parsed (``_parse``), letting the batch being applied ``beside`` go on between two; None if
        parsing raised (``_process`` then parses again, where a failure is handled as before)."""
        out = []
        try:
            for m in batch:
                out.append(self._parse(m))
                if beside is not None and not beside.done():
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            return None
        return out

    async def _apply_batch(self, batch: list[AbstractIncomingMessage], parsed: list | None, size: int) -> None:
        started = time.perf_counter()
        try:
            await self._process(batch, parsed)
            metrics().consumer_batch(self.name, time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (never let the consumer die)
            log.error("consumer.batch_crashed", consumer=self.name, error=repr(exc))
            for m in batch:
                await self._retry_later(m, repr(exc))
        self._held -= size  # settled: acked, refused or handed to a later retry

    # ------------------------------------------------------------------ processing
    def _parse(self, message: AbstractIncomingMessage) -> Parsed | Refused | None:
        """A Parsed message, a Refused (poison) one, or None to ignore it."""
        return self._parse_known(message) or self._parse_any(message)

    def _parse_known(self, message: AbstractIncomingMessage) -> Parsed | None:
        """The common case at its cost: a domain event of a type this consumer handles, proven clean of personal
        data without parsing (``privacy.json_strings_cannot_hold_code`` on the body, ``text_cannot_hold_code`` on
        the properties), parsed and validated by pydantic from the bytes (no ``json.loads`` and dict walk first).
        None for anything else, which ``_parse_any`` then reads the thorough way (and refuses with its reason):
        the same outcome for every message, about a tenth of the CPU for the usual one."""
        if self.whole_message_privacy or self.contracts is not None:
            return None
        if not json_strings_cannot_hold_code(message.body) or not self._properties_clean(message):
            return None
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError:
            return None
        handler = self.handlers.get(envelope.type) or self.batch_handlers.get(envelope.type)
        if handler is None:
            return None
        try:
            event = envelope.event()
        except (KeyError, ValidationError):
            return None
        return Parsed(message, envelope, event, handler)

    @staticmethod
    def _properties_clean(message: AbstractIncomingMessage) -> bool:
        """The properties and headers ``_carries_personal_data`` reads hold no code (the full matcher only on a
        value with a code's shape: an id now and then)."""
        for value in (message.message_id, message.type, message.correlation_id, message.app_id, message.reply_to,
                      message.routing_key, message.user_id):
            if value and not text_cannot_hold_code(value) and find_in(value) is not None:
                return False
        return not message.headers or find_in(_text(dict(message.headers))) is None

    def _parse_contract(self, message: AbstractIncomingMessage) -> Parsed | None:
        """The usual message of an outside system (``contracts``) at its cost: proven clean on its bytes (its raw
        text and every string, ``privacy.body_cannot_hold_code``; its properties and headers), the envelope parsed
        and validated from the bytes at once (no ``json.loads`` and dict walk first), then its data by its
        contract. These are the checks ``_parse_any`` makes of a message that passes them, with its outcome; None
        for anything else (a check not passed, an unknown type), which ``_parse_any`` then reads the thorough way
        and refuses with its reason and what it could read of it."""
        if not body_cannot_hold_code(message.body) or not self._properties_clean(message):
            return None
        try:
            envelope = self.envelope.model_validate_json(message.body)
        except ValidationError:
            return None
        handler = self.handlers.get(envelope.type) or self.batch_handlers.get(envelope.type)
        contract = self.contracts.get(envelope.type) if self.contracts is not None else None
        if handler is None or contract is None:
            return None
        try:
            event = contract.model_validate(envelope.data)
        except ValidationError:
            return None
        return Parsed(message, envelope, event, handler)

    def _parse_any(self, message: AbstractIncomingMessage) -> Parsed | Refused | None:
        """Any message, the thorough way: parsed, searched for personal data everywhere, then validated."""
        if self.contracts is not None and (parsed := self._parse_contract(message)) is not None:
            return parsed
        try:
            raw = json.loads(message.body)
        except ValueError:
            raw = None
        refused = self._carries_personal_data(message, raw)
        if refused is not None:
            return refused
        if raw is None:
            return Refused("bad_envelope: not JSON")
        try:
            envelope = self.envelope.model_validate(raw)  # CloudEvents' required attributes
        except ValidationError as exc:
            return Refused(f"bad_envelope: {describe(exc)}", raw, exc)
        handler = self.handlers.get(envelope.type) or self.batch_handlers.get(envelope.type)
        if handler is None:
            handler = self.fallback
            if handler is None:
                if self.contracts is not None:  # a consumer of outside systems answers what it does not know
                    return Refused("unknown_type", raw if raw is not None else envelope.model_dump(mode="json"))
                return None
        try:
            if self.contracts is not None:
                event = self.contracts[envelope.type].model_validate(envelope.data)
            else:
                event = envelope.event()
        except KeyError:
            event = None  # unknown type passed to the fallback as a bare envelope
        except ValidationError as exc:
            return Refused(f"contract_violation: {describe(exc)}",
                           raw if raw is not None else envelope.model_dump(mode="json"), exc)
        return Parsed(message, envelope, event, handler)

    def _carries_personal_data(self, message: AbstractIncomingMessage, raw: Any) -> Refused | None:
        """A message with a personal identity code (or a NUL) anywhere: in any string of its JSON body (escapes
        such as ``\\u002d`` undone), in its properties or in its AMQP headers; for messages from outside
        systems (``whole_message_privacy``) also in the body's raw text (a code written as a JSON number, or
        split over tokens). Domain events' numbers are amounts, not text, so they are not read as text. The usual
        message, an ASCII body without escapes or a code's shape anywhere (``privacy.body_cannot_hold_code``) with
        clean properties and headers, is proven clean without walking it."""
        if raw is not None and body_cannot_hold_code(message.body) and self._properties_clean(message):
            return None
        texts = [raw, message.message_id, message.type, message.correlation_id, message.app_id, message.reply_to,
                 message.routing_key, message.user_id, _text(dict(message.headers or {}))]
        if raw is None or self.whole_message_privacy:
            texts.append(_text(message.body))
        found = find_in(texts)
        if found is None:
            return None
        if found[1] == PRIVACY_REASON:
            return Refused(PRIVACY_REASON, raw)
        return Refused(f"contract_violation: {found[1]}" if raw is not None else "bad_envelope: not JSON", raw)

    async def _process(self, batch: list[AbstractIncomingMessage], parsed_already: list | None = None) -> None:
        good: list[Parsed] = []
        for i, m in enumerate(batch):
            parsed = self._parse(m) if parsed_already is None else parsed_already[i]
            if parsed is None:
                await m.ack()
                metrics().consumed(self.name, "ignored")
            elif isinstance(parsed, Refused):
                await self._refuse(m, parsed)
            else:
                good.append(parsed)
        if not good:
            return
        try:
            await self._apply_through_outages(good)
        except Exception as exc:  # noqa: BLE001
            if len(good) == 1:
                await self._failed(good[0], exc)
                return
            for p in good:  # find the bad one: each on its own
                try:
                    await self._apply_through_outages([p])
                except Exception as one_exc:  # noqa: BLE001
                    await self._failed(p, one_exc)
                    continue
                await p.message.ack()
            return
        await self._ack(good)

    async def _apply_through_outages(self, items: list[Parsed]) -> None:
        """``_apply``, and when the database cannot be used (down, restarting, refusing connections, the
        connection cut) the same batch again in place once it answers: its deliveries stay with this consumer,
        unacknowledged, so an outage spends none of the messages' delivery limit, which is for poison messages
        (five quick retries would dead-letter a whole batch during a restart of a few seconds). After
        ``OUTAGE_ATTEMPTS`` failures with the database answering in between, the usual retries take over."""
        attempts = 0
        while True:
            try:
                await self._apply(items)
                return
            except Exception as exc:  # noqa: BLE001
                cause = database_fault(exc)
                if cause not in OUTAGE_CAUSES or attempts >= OUTAGE_ATTEMPTS:
                    raise
                attempts += 1
                await self._database_back(cause, exc, len(items))

    async def _database_back(self, cause: str, exc: BaseException, held: int) -> None:
        """Wait until a session can use the database again (backing off up to 5 s between tries)."""
        log.warning("consumer.database_unavailable", consumer=self.name, cause=cause, held=held,
                    error_type=type(exc).__name__)
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            try:
                async with self.sessions() as session:
                    await session.execute(text("SELECT 1"))
                return
            except Exception as probe_exc:  # noqa: BLE001
                if database_fault(probe_exc) is None:
                    return  # not an outage: the batch's own try tells what it is
                delay = min(5.0, delay * 2)

    async def _apply(self, items: list[Parsed]) -> None:
        async with self.sessions() as session:
            async with session.begin():
                fresh = await inbox.claim(session, self.name, [p.envelope.id for p in items])
                todo = []
                for p in items:
                    if p.envelope.id in fresh:
                        fresh.discard(p.envelope.id)  # a duplicate inside the batch runs once
                        todo.append(p)
                spans = self._spans(todo) if self.tracer is not None else None
                try:
                    await self._handle(session, todo, spans)
                except Exception as exc:
                    for span in spans or ():
                        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    for span in spans or ():
                        span.end()
                if self.audit:
                    await record_bus(session, [(p.envelope, p.message.user_id) for p in todo])
        # committed: count what was done and what the inbox dropped as seen before
        metrics().consumed(self.name, "processed", len(todo))
        metrics().duplicates(self.name, len(items) - len(todo))

    def _spans(self, todo: list[Parsed]) -> list:
        """A started span per message, each the child of the message's ``traceparent`` (``tracing``)."""
        return [tracing.consumer_span(self.tracer, p.message.headers, f"{p.envelope.type} process", {
            "messaging.system": "rabbitmq", "messaging.operation.type": "process",
            "messaging.destination.name": self.name, "messaging.message.id": p.envelope.id,
            "cloudevents.event_type": p.envelope.type}) for p in todo]

    async def _handle(self, session: AsyncSession, todo: list[Parsed], spans: list | None) -> None:
        """Each message's handler in delivery order (a run of one type to its batch handler at once); a single
        message's handler runs in its span, so the events it writes carry the trace on."""
        i = 0
        while i < len(todo):
            p = todo[i]
            bind_correlation(p.envelope.correlationid, causation_id=p.envelope.id)
            current_delivery.set(p.message)
            current_consumer.set(self)
            batch_handler = self.batch_handlers.get(p.envelope.type)
            if batch_handler is None:
                if spans is None:
                    await p.handler(session, p.envelope, p.event)
                else:
                    with trace.use_span(spans[i], end_on_exit=False):
                        await p.handler(session, p.envelope, p.event)
                i += 1
                continue
            j = i
            while j < len(todo) and todo[j].envelope.type == p.envelope.type:
                j += 1  # a run of the same type, in delivery order
            current_run.set([q.message for q in todo[i:j]])
            await batch_handler(session, [(q.envelope, q.event) for q in todo[i:j]])
            i = j

    async def _refuse(self, message: AbstractIncomingMessage, refused: Refused) -> None:
        """Dead-letter a poison message, after ``on_refused`` has recorded what it records (once: the
        inbox remembers the message, so a redelivery records nothing more)."""
        if self.on_refused is not None:
            key = message.message_id
            if not key or len(key) > 50 or find_in(key):
                key = digest_text(hashlib.sha256(message.body), 50)
            attempts = 0
            while True:
                try:
                    async with self.sessions() as session:
                        async with session.begin():
                            if await inbox.claim(session, self.name, [f"refused:{key}"]):
                                current_delivery.set(message)
                                current_consumer.set(self)
                                await self.on_refused(session, message, refused)
                    break
                except Exception as exc:  # noqa: BLE001  (its answer must not be lost: try again later)
                    cause = database_fault(exc)
                    if cause in OUTAGE_CAUSES and attempts < OUTAGE_ATTEMPTS:  # as a batch does: wait it out
                        attempts += 1
                        await self._database_back(cause, exc, 1)
                        continue
                    log.error("consumer.on_refused_failed", consumer=self.name, error=repr(exc)[:300])
                    await self._retry_later(message, repr(exc))
                    return
        await self._dead_letter(message, refused.reason)

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
        metrics().consumed(self.name, "retried")
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
        headers[DEAD_LETTERED_AT_HEADER] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        body = message.body
        message_id, type_, correlation_id = message.message_id, message.type, message.correlation_id
        if reason == PRIVACY_REASON:
            # personal data is kept nowhere, a dead-letter queue included: only what identifies the message
            message_id, type_, correlation_id = (None if v is None or find_in(v) else v
                                                 for v in (message_id, type_, correlation_id))
            headers = {k: v for k, v in headers.items() if not find_in(_text({k: v}))}
            body = json.dumps({"removed": "the message carried a personal identity code",
                               "message_id": message_id, "type": type_}).encode()
        try:
            await self.bus.publish(
                body, self.name, message_id=message_id or "", type_=type_,
                correlation_id=correlation_id, headers=headers, dead_letter=True,
            )
        except Exception as exc:  # noqa: BLE001  (keep it on the main queue rather than lose it)
            log.error("consumer.dead_letter_failed", error=repr(exc))
            await message.nack(requeue=True)
            return
        await message.ack()
        metrics().dead_letter(self.name, reason)
