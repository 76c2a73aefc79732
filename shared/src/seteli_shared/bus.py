"""The bus on aio-pika: one durable topic exchange for domain events, publisher confirms,
``mandatory`` publishing with unroutable messages raised as failures, a timeout on every publish,
and a robust connection that restores consumers after a broker restart."""
from __future__ import annotations

import asyncio

import aio_pika
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from .logging import get_logger
from .settings import ServiceSettings

log = get_logger(__name__)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


class BrokerUnreachable(RuntimeError):
    pass


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
        self._lock = asyncio.Lock()

    @property
    def user(self) -> str:
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(self.settings.amqp_url).username or "guest")

    @property
    def dlx_name(self) -> str:
        return f"{self.settings.bus_namespace}.dlx"

    async def connect(self) -> None:
        try:
            self.connection = await aio_pika.connect_robust(
                self.settings.amqp_url,
                client_properties={"connection_name": f"seteli-{self.settings.service_name}"},
            )
        except Exception as exc:  # noqa: BLE001
            raise BrokerUnreachable(
                f"RabbitMQ is not reachable at {_redact(self.settings.amqp_url)} ({exc}). Start it with "
                "`rabbitmq-server -detached` (then `rabbitmqctl await_startup`), or set AMQP_URL."
            ) from exc
        await self._open_channel()

    async def _open_channel(self) -> None:
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
    ) -> None:
        """Publish one persistent message and wait for the broker's confirm. Raises on a nack,
        on an unroutable message (``PublishError``) and on timeout."""
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
        exchange = self.dead_letter_exchange if dead_letter else self.exchange
        await exchange.publish(
            message, routing_key, mandatory=True, timeout=self.settings.publish_timeout_seconds
        )

    async def close(self) -> None:
        if self.connection and not self.connection.is_closed:
            await self.connection.close()


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
