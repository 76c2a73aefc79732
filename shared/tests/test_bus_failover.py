"""Client-side failover (``bus.FailoverConnection``): ``AMQP_URL`` may list several broker addresses; the bus
connects to the first that answers and, when it loses that one, to the next, where its consumer and its
publishing resume. Here the addresses are a TCP proxy the test can cut and the machine's broker behind it
(the same broker twice, so nothing else needs to run); the three-node cluster under the real services:
``tests/test_cluster.py``."""
from __future__ import annotations

import json
from urllib.parse import urlparse

import aio_pika
import pytest

from seteli_shared.bus import Bus, BrokerUnreachable, FailoverConnection, broker_address, broker_urls, check_broker
from seteli_shared.testing import TcpProxy, eventually, make_settings
from seteli_shared.ports import free_port as _free_port


def test_the_private_hook_failover_relies_on_is_still_in_aio_pika():
    """The one aio-pika internal the failover overrides: an upgrade that renames it fails here, loudly."""
    assert callable(getattr(aio_pika.RobustConnection, "_RobustConnection__connect_transport", None))
    assert "_RobustConnection__connect_transport" in FailoverConnection.__dict__


def test_amqp_url_lists_a_clusters_nodes_whole_or_as_host_and_port():
    url = "amqp://svc:p%2Cw@rabbit-0:5672/prod?heartbeat=10,rabbit-1:5672,amqp://other:x@rabbit-2:5673/prod"
    assert broker_urls(url) == ["amqp://svc:p%2Cw@rabbit-0:5672/prod?heartbeat=10",
                                "amqp://svc:p%2Cw@rabbit-1:5672/prod?heartbeat=10",
                                "amqp://other:x@rabbit-2:5673/prod"]
    assert broker_address(url) == "rabbit-0:5672, rabbit-1:5672, rabbit-2:5673", "never the credentials"
    assert broker_urls("amqp://guest:guest@127.0.0.1:5672/") == ["amqp://guest:guest@127.0.0.1:5672/"]


async def test_the_first_address_that_answers_is_used_and_none_answering_is_one_line(amqp_url):  # noqa: ANN001
    dead = f"127.0.0.1:{_free_port()}"
    u = urlparse(amqp_url)
    await check_broker(f"amqp://{u.username}:{u.password}@{dead}/,{u.hostname}:{u.port or 5672}")
    with pytest.raises(BrokerUnreachable) as refused:
        await check_broker(f"amqp://guest:guest@{dead}/,127.0.0.1:{_free_port()}", timeout=5)
    assert str(refused.value).startswith(f"RabbitMQ is not reachable at {dead}, 127.0.0.1:")


async def test_losing_the_node_moves_the_bus_to_the_next_where_consuming_and_publishing_resume(
        amqp_url, namespace):  # noqa: ANN001
    u = urlparse(amqp_url)
    proxy = await TcpProxy(u.hostname, u.port or 5672).start()
    nodes = f"amqp://{u.username}:{u.password}@{proxy.address}/,{u.hostname}:{u.port or 5672}"
    settings = make_settings(service_name="test", bus_namespace=namespace, amqp_reconnect_seconds=0.5, amqp_url=nodes)
    bus = Bus(settings)
    await bus.connect()
    got: list[int] = []
    try:
        assert bus.connection.url.port == proxy.port, "the first address that answers"
        channel = await bus.connection.channel()
        queue = await channel.declare_queue(f"{namespace}.test", durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(settings.exchange_name, "test.n.v1")

        async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(json.loads(message.body)["n"])
            await message.ack()

        await queue.consume(on)

        async def send(n: int) -> None:
            await bus.publish(json.dumps({"n": n}).encode(), "test.n.v1", message_id=f"m{n}")

        await send(1)
        await eventually(lambda: got == [1])
        await proxy.down()  # the node is lost: its connections cut, new ones refused

        async def published_again() -> bool:
            try:
                await send(2)
                return True
            except Exception:  # noqa: BLE001  (the connection is moving on meanwhile)
                return False

        await eventually(published_again, timeout=20, interval=0.2)
        assert bus.connection.url.port == (u.port or 5672), "reconnected to the next address"
        await eventually(lambda: 2 in got, timeout=20)
        # at least once: 1's ack may have been cut with the node, and a publish that raised while the connection
        # moved may have reached the broker, so either can come again (the services' inboxes drop such repeats)
        assert set(got) == {1, 2} and got[0] == 1, "the consumer resumed on the next node"
    finally:
        await bus.close()
        await proxy.close()
