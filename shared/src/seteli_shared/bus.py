"""The bus on aio-pika: one durable topic exchange for domain events, publisher confirms,
``mandatory`` publishing with unroutable messages raised as failures, a timeout on every publish,
and a robust connection that restores consumers after a broker restart."""
from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import aio_pika
import aiormq
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

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


class BrokerLoginRefused(BrokerUnavailable):
    """The broker answered but refused the user or password of AMQP_URL."""

    reason = "broker_login_refused"


START_RABBITMQ = "rabbitmq-server -detached && rabbitmqctl await_startup"


def broker_address(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.hostname or '127.0.0.1'}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}"


def broker_user(url: str) -> str:
    return unquote(urlparse(url).username or "guest")


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
        vhost = unquote(urlparse(url).path[1:]) or "/"
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


async def open_connection(url: str, *, robust: bool = True, timeout: float = 15.0,
                          **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """Connect to the broker; a failure raises a ``BrokerUnavailable`` that says why in one line."""
    connect = aio_pika.connect_robust if robust else aio_pika.connect
    try:
        with _quiet_connection_errors():
            return await asyncio.wait_for(connect(url, **kwargs), timeout)
    except Exception as exc:  # noqa: BLE001
        raise explain_connect_failure(url, exc) from exc


async def check_broker(url: str, timeout: float = 5.0) -> None:
    """Connect and log in once, then close: raises ``BrokerUnavailable`` when that is not possible."""
    connection = await open_connection(url, robust=False, timeout=timeout)
    await connection.close()


def quorum_queue_arguments(dead_letter_exchange: str, dead_letter_key: str, delivery_limit: int) -> dict:
    """Arguments of every consumer queue. RabbitMQ 3.10 has no default delivery limit: set it."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-routing-key": dead_letter_key,
        "x-delivery-limit": delivery_limit,
    }


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
            self.settings.amqp_url,
            client_properties={"connection_name": f"seteli-{self.settings.service_name}"},
        )
        await self._open_channel()

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
        await target.publish(
            message, routing_key, mandatory=True, timeout=self.settings.publish_timeout_seconds
        )

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

