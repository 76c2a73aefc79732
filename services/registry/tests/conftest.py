"""The registry in this process, on its own database (PostgreSQL, and the embedded SQLite) and a bus
namespace of its own on the real RabbitMQ; a spy queue that receives every event."""
from __future__ import annotations

from contextlib import AsyncExitStack

import aio_pika
import httpx
import pytest

from registry.app import create_app
from registry.settings import RegistrySettings
from seteli_shared.auth import mint

OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


@pytest.fixture(params=["postgresql", "sqlite"])
async def registry(request, pg, namespace, amqp_url, tmp_path):  # noqa: ANN001
    url = await pg.create("registry") if request.param == "postgresql" else \
        f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    settings = RegistrySettings(environment="test", database_url=url, amqp_url=amqp_url,
                                bus_namespace=namespace, relay_idle_seconds=0.05)
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=OPERATOR))
        client.app = app  # tests set ``client.app.state.clock``
        yield client


@pytest.fixture
async def spy(amqp_url, namespace):  # noqa: ANN001
    """A queue of this test's namespace that receives every event (deleted with the namespace)."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange, "#")
    yield queue
    await connection.close()


