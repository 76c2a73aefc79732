"""Helpers for the project's tests (real broker and databases; no mocks)."""
from __future__ import annotations

import asyncio

import aio_pika

from .settings import ServiceSettings


def _extra_consumer_queues(namespace: str) -> list[str]:
    """The services' further consumers' queues (``ServiceSpec.extra_consumers``) in this namespace."""
    try:
        from .manifest import extra_subscriptions
    except ImportError:  # pragma: no cover
        return []
    return [f"{namespace}.{queue}" for extras in extra_subscriptions().values() for queue, _, _ in extras]


async def delete_namespace(amqp_url: str, namespace: str, queues: list[str]) -> None:
    """Delete the given queues (and their dead-letter queues), the services' further consumers' queues
    and the namespace's exchanges."""
    queues = list(dict.fromkeys(queues + _extra_consumer_queues(namespace)))
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues + [f"{q}.dlq" for q in queues]:
            channel = await connection.channel()
            try:
                await channel.queue_delete(name)
            except Exception:  # noqa: BLE001
                pass
        for ex in (f"{namespace}.events", f"{namespace}.dlx", f"{namespace}.decisions",
                   f"{namespace}.decision-replies", f"{namespace}.notices"):
            channel = await connection.channel()
            try:
                await channel.exchange_delete(ex)
            except Exception:  # noqa: BLE001
                pass
    finally:
        await connection.close()



def make_settings(cls=ServiceSettings, **kw) -> ServiceSettings:  # noqa: ANN001
    kw.setdefault("environment", "test")
    kw.setdefault("log_json", True)
    return cls(**kw)


async def eventually(predicate, timeout: float = 15.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Await ``predicate()`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
