"""The bus on aio-pika: one durable topic exchange for domain events, publisher confirms,
``mandatory`` publishing with unroutable messages raised as failures, a timeout on every publish,
and a robust connection that restores consumers after a broker restart.

``Bus.publish_many`` (the outbox relay's) publishes a batch with the same properties and guarantees
as ``publish`` one at a time, but writes the whole batch's frames to the socket at once (encoded here,
not by pamqp per message) and waits for the confirms together: per message, ``publish`` costs the
client about 0.15 ms of Python and one socket write, which capped the relay at 2,000-3,000 messages/s.
The channel internals that takes are in one module, ``_internals.aiormq_batch``."""
from __future__ import annotations

import asyncio
import logging
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlparse

import aio_pika
import aiormq
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from ._internals import aiormq_batch
from .logging import get_logger
from .settings import ServiceSettings

log = get_logger(__name__)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


class BrokerUnavailable(RuntimeError):
    """The broker cannot be used. ``str(exc)`` is one line saying why and what to do about it."""

    reason = "broker_unavailable"


class BrokerUnreachable(BrokerUnavailable):
    """Nothing answers at the broker's address (or not in time)."""

    reason = "broker_unreachable"


class BrokerStalled(BrokerUnavailable):
    """The broker holds the connection but does not confirm what is published to it in time."""

    reason = "broker_stalled"


class PublishInDoubt(asyncio.TimeoutError):
    """No confirm came in time for a message whose frames went out: the broker may still have it (a broker or
    network that stalled and comes back delivers what it was sent). ``confirm`` resolves later: None when the
    broker confirms it after all, an exception when it will not (a nack, a return, the channel closing). The
    outbox relay waits for it rather than publishing the message a second time."""

    def __init__(self, confirm: asyncio.Future):
        super().__init__("no confirm from the broker in time")
        self.confirm = confirm


class BrokerLoginRefused(BrokerUnavailable):
    """The broker answered but refused the user or password of AMQP_URL."""

    reason = "broker_login_refused"


START_RABBITMQ = "rabbitmq-server -detached && rabbitmqctl await_startup"


def broker_urls(url: str) -> list[str]:
    """The addresses ``AMQP_URL`` lists: one URL, or several separated by commas (the nodes of a cluster), each
    a whole URL or only ``host:port`` (taking the first one's scheme, credentials, virtual host and options):
    ``amqp://user:pw@rabbit-0:5672/,rabbit-1:5672,rabbit-2:5672``."""
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if not parts:
        return [url]
    first = urlparse(parts[0])
    out = [parts[0]]
    for part in parts[1:]:
        if "://" in part:
            out.append(part)
            continue
        host = part.split("/", 1)[0]
        auth = first.netloc.rpartition("@")[0]
        out.append(first._replace(netloc=f"{auth}@{host}" if auth else host).geturl())
    return out


def broker_address(url: str) -> str:
    """Where the broker is, for messages (every node of a list); never the credentials."""
    found = []
    for one in broker_urls(url):
        parsed = urlparse(one)
        found.append(f"{parsed.hostname or '127.0.0.1'}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}")
    return ", ".join(found)


def broker_user(url: str) -> str:
    return unquote(urlparse(broker_urls(url)[0]).username or "guest")


def explain_connect_failure(url: str, exc: BaseException) -> BrokerUnavailable:
    """The one-line explanation of a failed connection attempt (never the password)."""
    where = broker_address(url)
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError) or (
            isinstance(exc, aiormq.exceptions.ConnectionClosed) and getattr(exc, "code", None) == 403):
        return BrokerLoginRefused(
            f"RabbitMQ at {where} refused the login for user '{broker_user(url)}' — check AMQP_URL")
    if isinstance(exc, aiormq.exceptions.IncompatibleProtocolError):
        return BrokerUnavailable(f"what answers at {where} is not RabbitMQ (it does not speak AMQP) — check AMQP_URL")
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "OpenOk" in str(exc):
        vhost = unquote(urlparse(broker_urls(url)[0]).path[1:]) or "/"
        return BrokerUnavailable(f"RabbitMQ at {where} refused virtual host '{vhost}' to user "
                                 f"'{broker_user(url)}' — check AMQP_URL")
    if isinstance(exc, (OSError, asyncio.TimeoutError)):  # aiormq's connection errors are OSErrors
        return BrokerUnreachable(f"RabbitMQ is not reachable at {where} — start it with `{START_RABBITMQ}`")
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return BrokerUnavailable(f"RabbitMQ at {where} did not accept the connection ({detail}) — check AMQP_URL")


@contextmanager
def _quiet_connection_errors() -> Iterator[None]:
    """aiormq logs a failed first connection itself; the caller explains it in one line instead."""
    logger = logging.getLogger("aiormq.connection")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection to the first of several broker addresses that answers (the nodes of a cluster): each
    attempt to (re)connect tries them in turn, beginning with the one after the node it was connected to when
    that connection was lost; channels, queues and consumers are restored on the node it reaches, as aio-pika
    restores them after a reconnection to the same node. Quorum queues live on every node of the cluster, so a
    consumer resumes on the surviving nodes' copy.

    aio-pika has no hook for the address of each attempt: this overrides its ``RobustConnection``'s private
    ``__connect_transport`` (one attempt), the only internal used here; ``shared/tests/test_cluster.py``
    fails loudly if an upgrade renames it."""

    def __init__(self, url: Any, loop: asyncio.AbstractEventLoop | None = None, *, addresses: Sequence[str] = (),
                 attempt_timeout: float = 5.0, **kwargs: Any):
        super().__init__(url, loop=loop, **kwargs)
        self.addresses = [URL(a) for a in addresses] or [self.url]
        self.attempt_timeout = attempt_timeout
        self.current = 0

    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802  (aio-pika's private name)
        """One attempt, over the addresses in turn until one answers (each within ``attempt_timeout``)."""
        last: BaseException | None = None
        for _ in range(len(self.addresses)):
            self.url = self.addresses[self.current]
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    await aio_pika.RobustConnection._RobustConnection__connect_transport(self)
                return
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001  (this node: try the next)
                last = exc
                if len(self.addresses) > 1:
                    log.warning("bus.node_unreachable", address=broker_address(str(self.url)), error=repr(exc)[:200])
                self.current = (self.current + 1) % len(self.addresses)
        assert last is not None
        raise last

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if len(self.addresses) > 1:
            log.info("bus.connected", address=broker_address(str(self.url)))

    async def _on_connection_close(self, closing: asyncio.Future) -> None:
        if not self._close_called and len(self.addresses) > 1:  # lost: the next attempt begins with the next node
            log.warning("bus.connection_lost", address=broker_address(str(self.url)))
            self.current = (self.current + 1) % len(self.addresses)
        await super()._on_connection_close(closing)


async def _connect_plain(urls: list[str], timeout: float, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """The first address that answers (a plain connection, no reconnection)."""
    last: BaseException | None = None
    for url in urls:
        try:
            return await asyncio.wait_for(aio_pika.connect(url, **kwargs), timeout)
        except Exception as exc:  # noqa: BLE001
            last = exc
    assert last is not None
    raise last


async def open_connection(url: str, *, robust: bool = True, timeout: float = 15.0, reconnect_seconds: float = 5.0,
                          **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """Connect to the broker (the first of ``AMQP_URL``'s addresses that answers; a robust connection moves on
    to the next when it loses one, trying again every ``reconnect_seconds`` while none answers); a failure
    raises a ``BrokerUnavailable`` that says why in one line."""
    urls = broker_urls(url)
    try:
        with _quiet_connection_errors():
            if not robust:
                return await _connect_plain(urls, timeout, **kwargs)
            connection = FailoverConnection(URL(urls[0]), addresses=urls,
                                            attempt_timeout=min(timeout, 5.0) if len(urls) > 1 else timeout,
                                            reconnect_interval=reconnect_seconds, **kwargs)
            await asyncio.wait_for(connection.connect(), timeout)
            return connection
    except Exception as exc:  # noqa: BLE001
        raise explain_connect_failure(url, exc) from exc


async def check_broker(url: str, timeout: float = 5.0) -> None:
    """Connect and log in once, then close: raises ``BrokerUnavailable`` when that is not possible."""
    connection = await open_connection(url, robust=False, timeout=timeout)
    await connection.close()


#: AMQP's reply code for a mandatory message no queue is bound for (``Basic.Return``)
NO_ROUTE = 312


def is_unroutable(error: BaseException | None) -> bool:
    """The broker returned the message: no queue is bound for its routing key (``NO_ROUTE``)."""
    if not isinstance(error, aiormq.exceptions.PublishError):
        return False
    delivery = getattr(getattr(error, "message", None), "delivery", None)
    return getattr(delivery, "reply_code", None) == NO_ROUTE


def quorum_queue_arguments(dead_letter_exchange: str, dead_letter_key: str, delivery_limit: int) -> dict:
    """Arguments of every consumer queue. RabbitMQ 3.10 has no default delivery limit: set it."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-routing-key": dead_letter_key,
        "x-delivery-limit": delivery_limit,
    }


def replay_key(queue: str) -> str:
    """The routing key on the dead-letter exchange that brings a replayed dead letter back to ``queue`` (each
    consumer queue is bound to it): a service user may write to its namespace's exchanges, not to the default one."""
    return f"replay.{queue}"


@dataclass(frozen=True)
class Outgoing:
    """One message for ``Bus.publish_many``: as ``Bus.publish``'s arguments."""

    body: bytes
    routing_key: str
    message_id: str
    type_: str | None = None
    #: another topic exchange of the namespace (``<ns>.<exchange>``) than the domain events'
    exchange: str | None = None
    #: the W3C traceparent of the span that wrote it: sent as the ``traceparent`` header (``tracing``)
    traceparent: str | None = None
    #: the traceparents of the other spans a message stands for (a coalesced message's later rows), space-separated:
    #: sent as the ``tracelinks`` header; a consumer's span links to them (``tracing.consumer_span``)
    tracelinks: str | None = None

    def headers(self) -> dict[str, str] | None:
        """The message's tracing headers (None when it has none)."""
        out = {name: value for name, value in (("traceparent", self.traceparent), ("tracelinks", self.tracelinks))
               if value}
        return out or None


_FRAME = struct.Struct(">BHI")
_PUBLISH_METHOD = struct.Struct(">HHH").pack(60, 40, 0)  # Basic.Publish, reserved ticket 0
_HEADER = struct.Struct(">HHQH")  # class 60, weight 0, body size, property flags
_FRAME_END = b"\xce"
#: basic property flags (AMQP 0-9-1, in the order of the property list)
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _PRIORITY, _CORRELATION_ID, _MESSAGE_ID, _TYPE, _USER_ID, _APP_ID = (
    0x8000, 0x2000, 0x1000, 0x0800, 0x0400, 0x0080, 0x0020, 0x0010, 0x0008)


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError("an AMQP short string holds at most 255 bytes")
    return bytes((len(raw),)) + raw


class PublishFrames:
    """The wire frames of ``Bus.publish``'s persistent messages (``Basic.Publish``, content header,
    body), byte for byte what aiormq and pamqp write for the same ``aio_pika.Message`` (tested against
    them): content type, empty headers, persistent delivery mode, priority 0 (aio-pika's default),
    correlation id, message id, type, user id and app id."""

    def __init__(self, channel_number: int, max_content_size: int, user_id: str, app_id: str):
        self.channel = channel_number
        self.max_content = max_content_size
        # an empty property is left out (as pamqp leaves out None and "")
        self.head_flags = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _PRIORITY
        self.content_type = _short(CONTENT_TYPE)
        self.mode = bytes((DeliveryMode.PERSISTENT, 0))
        self.head = self.content_type + b"\x00\x00\x00\x00" + self.mode
        self.tail_flags = (_USER_ID if user_id else 0) | (_APP_ID if app_id else 0)
        self.tail = (_short(user_id) if user_id else b"") + (_short(app_id) if app_id else b"")

    def frame(self, kind: int, payload: bytes) -> bytes:
        return _FRAME.pack(kind, self.channel, len(payload)) + payload + _FRAME_END

    def message(self, exchange: str, routing_key: str, body: bytes, message_id: str, type_: str | None,
                correlation_id: str | None = None, traceparent: str | None = None,
                tracelinks: str | None = None) -> bytes:
        """The frames of one mandatory publish (with ``traceparent`` and ``tracelinks`` headers when given)."""
        head = self.head
        if traceparent or tracelinks:  # a field table of long strings: name, "S", length, value
            entry = b""
            for name, value in (("tracelinks", tracelinks), ("traceparent", traceparent)):  # as pamqp: sorted
                if value:
                    raw = value.encode()
                    entry += _short(name) + b"S" + struct.pack(">I", len(raw)) + raw
            head = self.content_type + struct.pack(">I", len(entry)) + entry + self.mode
        flags, props = self.head_flags, [head]
        if correlation_id:
            flags |= _CORRELATION_ID
            props.append(_short(correlation_id))
        if message_id:
            flags |= _MESSAGE_ID
            props.append(_short(message_id))
        if type_:
            flags |= _TYPE
            props.append(_short(type_))
        flags |= self.tail_flags
        props.append(self.tail)
        out = [self.frame(1, _PUBLISH_METHOD + _short(exchange) + _short(routing_key) + b"\x01"),
               self.frame(2, _HEADER.pack(60, 0, len(body), flags) + b"".join(props))]
        for i in range(0, len(body), self.max_content):
            out.append(self.frame(3, body[i:i + self.max_content]))
        return b"".join(out)


class Bus:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.dead_letter_exchange: AbstractExchange | None = None
        #: other topic exchanges of the namespace this service publishes to (e.g. ``decision-replies``)
        self._others: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()
        #: when publisher confirms stopped coming in time (loop time of the first publish since the last confirmed
        #: one that got no confirm within ``publish_timeout_seconds``); None while they come. A broker that keeps
        #: the connection but confirms nothing is down for readiness, not "connected"
        self.unconfirmed_since: float | None = None
        #: a channel of its own for ``probe`` (a probe left waiting on a stalled broker never holds up a publish)
        self._probe_channel: AbstractRobustChannel | None = None

    @property
    def user(self) -> str:
        return broker_user(self.settings.amqp_url)

    @property
    def dlx_name(self) -> str:
        return f"{self.settings.bus_namespace}.dlx"

    async def connect(self) -> None:
        """Open the robust connection and the channel. Raises ``BrokerUnreachable`` or
        ``BrokerLoginRefused`` (subclasses of ``BrokerUnavailable``) with a one-line explanation."""
        self.connection = await open_connection(
            self.settings.amqp_url, reconnect_seconds=self.settings.amqp_reconnect_seconds,
            client_properties={"connection_name": f"seteli-{self.settings.service_name}"},
        )
        await self._open_channel()
        self._probe_channel = await self.connection.channel(publisher_confirms=True)

    async def _open_channel(self) -> None:
        self._others = {}
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await self.channel.declare_exchange(
            self.settings.exchange_name, ExchangeType.TOPIC, durable=True
        )
        self.dead_letter_exchange = await self.channel.declare_exchange(
            self.dlx_name, ExchangeType.DIRECT, durable=True
        )

    @property
    def is_connected(self) -> bool:
        return bool(self.connection and not self.connection.is_closed and self.channel and not self.channel.is_closed)

    def _note_confirms(self, results: Sequence[BaseException | None]) -> None:
        """Remember whether confirms come in time (``unconfirmed_since``), from a publish's outcome."""
        if any(isinstance(r, (asyncio.TimeoutError, TimeoutError)) for r in results):
            if self.unconfirmed_since is None:
                self.unconfirmed_since = asyncio.get_running_loop().time()
                log.warning("bus.confirms_timed_out", timeout_seconds=self.settings.publish_timeout_seconds)
        elif any(r is None for r in results):
            if self.unconfirmed_since is not None:
                log.info("bus.confirms_flowing_again")
            self.unconfirmed_since = None

    async def probe(self, timeout: float) -> None:
        """A bounded round trip through the broker, for readiness: an empty transient message to the
        dead-letter exchange under a routing key nothing is bound to (the broker drops it and confirms it),
        on the probe's own channel, with a confirm awaited for at most ``timeout`` seconds. Raises
        ``BrokerUnreachable`` without a connection (a robust one reconnects meanwhile) and ``BrokerStalled``
        when no confirm comes in time; a confirm in time also clears ``unconfirmed_since``."""
        if not self.is_connected or self._probe_channel is None or self._probe_channel.is_closed:
            raise BrokerUnreachable(f"no connection to RabbitMQ at {broker_address(self.settings.amqp_url)} "
                                    "(reconnecting)")
        exchange = await self._probe_channel.get_exchange(self.dlx_name, ensure=False)
        message = Message(b"", delivery_mode=DeliveryMode.NOT_PERSISTENT, app_id=self.settings.service_name)
        try:
            async with asyncio.timeout(timeout):
                await exchange.publish(message, f"readiness-probe.{self.settings.service_name}", mandatory=False)
        except TimeoutError:
            self._note_confirms([TimeoutError()])
            raise BrokerStalled(f"RabbitMQ at {broker_address(self.settings.amqp_url)} confirmed no publish within "
                                f"{timeout:g} s") from None
        self._note_confirms([None])

    async def _ensure_channel(self) -> None:
        if self.channel is None or self.channel.is_closed:
            async with self._lock:
                if self.channel is None or self.channel.is_closed:
                    await self._open_channel()

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str,
        type_: str | None = None,
        correlation_id: str | None = None,
        headers: dict | None = None,
        dead_letter: bool = False,
        exchange: str | None = None,
    ) -> None:
        """Publish one persistent message and wait for the broker's confirm. Raises on a nack,
        on an unroutable message (``PublishError``) and on timeout. ``exchange`` names another topic
        exchange of the namespace (``<ns>.<exchange>``) than the domain events'."""
        await self._ensure_channel()
        message = Message(
            body,
            delivery_mode=DeliveryMode.PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=message_id,
            type=type_,
            correlation_id=correlation_id,
            app_id=self.settings.service_name,
            user_id=self.user,
            headers=headers or {},
        )
        if exchange:
            target = await self._exchange(exchange)
        else:
            target = self.dead_letter_exchange if dead_letter else self.exchange
        try:
            await target.publish(
                message, routing_key, mandatory=True, timeout=self.settings.publish_timeout_seconds
            )
        except (asyncio.TimeoutError, TimeoutError) as exc:
            self._note_confirms([exc])
            raise
        self._note_confirms([None])

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish persistent messages as ``publish`` does (``mandatory``, publisher confirms, the same
        properties), all frames in one write, and wait for every confirm (``publish_timeout_seconds`` for the
        batch). Returns, per message, None (confirmed) or the exception that failed it: a nack, an unroutable
        message (``PublishError``), a timeout, the channel closing."""
        if not messages:
            return []
        await self._ensure_channel()
        channel = await self.channel.get_underlay_channel()
        if not aiormq_batch.capable(channel):
            return list(await asyncio.gather(*(self.publish(
                m.body, m.routing_key, message_id=m.message_id, type_=m.type_, exchange=m.exchange,
                headers=m.headers())
                for m in messages), return_exceptions=True))
        results: list[BaseException | None] = [None] * len(messages)
        encoder = PublishFrames(*aiormq_batch.frame_limits(channel), self.user, self.settings.service_name)
        names: dict[str | None, str] = {None: self.exchange.name}
        parts: list[bytes] = []
        wanted: list[int] = []
        for i, m in enumerate(messages):
            try:
                if m.exchange not in names:
                    names[m.exchange] = (await self._exchange(m.exchange)).name
                parts.append(encoder.message(names[m.exchange], m.routing_key, m.body, m.message_id, m.type_,
                                             traceparent=m.traceparent, tracelinks=m.tracelinks))
                wanted.append(i)
            except Exception as exc:  # noqa: BLE001  (a message that cannot be encoded fails alone)
                results[i] = exc
        if not wanted:
            return results
        outcomes = await aiormq_batch.publish_frames(channel, parts, [messages[i].message_id for i in wanted],
                                                     self.settings.publish_timeout_seconds)
        for i, outcome in zip(wanted, outcomes):
            results[i] = PublishInDoubt(outcome) if isinstance(outcome, asyncio.Future) else outcome
        self._note_confirms(results)
        return results

    async def _exchange(self, suffix: str) -> AbstractExchange:
        found = self._others.get(suffix)
        if found is None:
            found = await self.channel.declare_exchange(f"{self.settings.bus_namespace}.{suffix}", ExchangeType.TOPIC,
                                                        durable=True)
            self._others[suffix] = found
        return found

    async def close(self) -> None:
        if self.connection and not self.connection.is_closed:
            await self.connection.close()
