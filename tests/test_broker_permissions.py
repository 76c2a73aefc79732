"""Outside systems on the real broker: RabbitMQ's own permissions keep each to its own part, and
its validated ``user_id`` tells a consumer who published."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from urllib.parse import urlparse

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from seteli_shared import broker
from seteli_shared.manifest import NAMES, subscriptions

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ,
                                reason="needs the local broker's rabbitmqctl")


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60).stdout


async def _remove_everything_of(amqp_url: str, ns: str, users: list[str]) -> None:
    """Every user, policy, queue and exchange the module made: definitions and outside systems."""
    defs = broker.definitions(ns, "/", 5, subscriptions={s: [] for s in NAMES})
    for name in users:
        _rabbitmqctl("delete_user", name)
    for policy in defs["policies"]:
        _rabbitmqctl("clear_policy", "-p", "/", policy["name"])
    queues = {q["name"] for q in defs["queues"]} | {f"{ns}.notices.p1", f"{ns}.notices.p2",
                                                    f"{ns}.notices.sneaky", f"{ns}.decisions.watch",
                                                    f"{ns}.decision-replies.091", f"{ns}.decision-replies.092",
                                                    f"{ns}.decision-replies.sneaky"}
    conn = await aio_pika.connect(amqp_url)
    try:
        for name in sorted(queues):
            await (await conn.channel()).queue_delete(name)
        for ex in defs["exchanges"]:
            await (await conn.channel()).exchange_delete(ex["name"])
    finally:
        await conn.close()


def _left_on_the_broker(ns: str, prefix: str) -> list[str]:
    left = []
    for what, args in (("policy", ("list_policies", "-p", "/")), ("queue", ("list_queues", "-p", "/", "name")),
                       ("exchange", ("list_exchanges", "-p", "/", "name")), ("user", ("list_users",))):
        left += [f"{what} {line.split()[1 if what == 'policy' else 0]}" for line in _rabbitmqctl(*args).splitlines()
                 if line.strip() and (f"{ns}." in line or f"{ns}-" in line or line.startswith(prefix))]
    return left


@pytest.fixture(scope="module")
async def outside(amqp_url):  # noqa: ANN001
    ns = f"perm{uuid.uuid4().hex[:8]}"
    prefix = f"{ns}-"
    users = []
    try:
        await asyncio.to_thread(broker.apply, ns, "/", 5)
        for kind, ident in (("funder_system", "091"), ("funder_system", "092"), ("provider_system", "p1"),
                            ("provider_system", "p2"), ("service", "payments")):
            users.append(await asyncio.to_thread(broker.add_system_user, kind, ident, "pw-" + ident, ns, "/",
                                                 prefix))
        u = urlparse(amqp_url)

        def url_of(user: str, password: str) -> str:
            return f"amqp://{user}:{password}@{u.hostname}:{u.port or 5672}/"

        yield ns, prefix, url_of
    finally:
        await _remove_everything_of(amqp_url, ns, users)
    assert _left_on_the_broker(ns, prefix) == [], "the test left these on the shared broker"


async def test_a_funders_case_system_may_publish_only_its_own_decisions(outside, amqp_url):  # noqa: ANN001
    ns, prefix, url_of = outside
    admin = await aio_pika.connect(amqp_url)
    watch = await (await admin.channel()).declare_queue(f"{ns}.decisions.watch", durable=True)
    await watch.bind(f"{ns}.decisions", "decision.#")

    case_system = await aio_pika.connect(url_of(f"{prefix}funder-091", "pw-091"))
    ch = await case_system.channel(publisher_confirms=True)
    exchange = await ch.get_exchange(f"{ns}.decisions", ensure=False)
    await exchange.publish(aio_pika.Message(b'{"decision": 1}', user_id=f"{prefix}funder-091"), "decision.091",
                           timeout=5)
    with pytest.raises(ChannelAccessRefused):
        await exchange.publish(aio_pika.Message(b'{"decision": 2}'), "decision.092", timeout=5)
    ch = await case_system.channel(publisher_confirms=True)
    exchange = await ch.get_exchange(f"{ns}.decisions", ensure=False)
    with pytest.raises(ChannelAccessRefused):  # a key no queue binds (it would only come back unroutable)
        await exchange.publish(aio_pika.Message(b'{"decision": 2}'), "decision.091.x", timeout=5)

    ch = await case_system.channel(publisher_confirms=True)  # a refused publish closed the channel
    exchange = await ch.get_exchange(f"{ns}.decisions", ensure=False)
    with pytest.raises(ChannelPreconditionFailed):
        await exchange.publish(aio_pika.Message(b'{"decision": 3}', user_id=f"{prefix}funder-092"), "decision.091",
                               timeout=5)
    ch = await case_system.channel()
    with pytest.raises(ChannelAccessRefused):  # and it may not read anything
        q = await ch.declare_queue(f"{ns}.decisions.watch", passive=True)
        await q.get(timeout=5, fail=False)

    got = await watch.get(timeout=5, no_ack=True)
    assert got.body == b'{"decision": 1}'
    assert broker.trusted_funder(got.user_id, prefix) == "091", "the consumer knows who published"
    assert await watch.get(fail=False, no_ack=True) is None, "the refused decisions never arrived"
    await case_system.close()
    await admin.close()


async def test_a_providers_system_reads_only_its_own_notices(outside, amqp_url):  # noqa: ANN001
    ns, prefix, url_of = outside
    admin = await aio_pika.connect(amqp_url)
    notices = await (await admin.channel(publisher_confirms=True)).get_exchange(f"{ns}.notices")
    for p in ("p1", "p2"):
        await notices.publish(aio_pika.Message(f"settled for {p}".encode()), f"notice.{p}.settlement", timeout=5)

    p2 = await aio_pika.connect(url_of(f"{prefix}provider-p2", "pw-p2"))
    own = await (await p2.channel()).declare_queue(f"{ns}.notices.p2", passive=True)
    assert (await own.get(timeout=5)).body == b"settled for p2"
    with pytest.raises(ChannelAccessRefused):
        q = await (await p2.channel()).declare_queue(f"{ns}.notices.p1", passive=True)
        await q.get(timeout=5)
    with pytest.raises(ChannelAccessRefused):  # nor make itself a queue bound to another's notices
        await (await p2.channel()).declare_queue(f"{ns}.notices.sneaky", durable=True)
    with pytest.raises(ChannelAccessRefused):  # nor publish notices
        ch = await p2.channel(publisher_confirms=True)
        ex = await ch.get_exchange(f"{ns}.notices", ensure=False)
        await ex.publish(aio_pika.Message(b"forged"), "notice.p1.settlement", timeout=5)

    p1 = await aio_pika.connect(url_of(f"{prefix}provider-p1", "pw-p1"))
    mine = await (await p1.channel()).declare_queue(f"{ns}.notices.p1", passive=True)
    assert (await mine.get(timeout=5)).body == b"settled for p1"
    assert await mine.get(fail=False) is None
    await p1.close()
    await p2.close()
    await admin.close()


async def test_a_funders_case_system_reads_only_its_own_replies(outside, amqp_url):  # noqa: ANN001
    """A reply to an accepted decision carries the client's one-time login code: only the funder's own
    system may read it."""
    ns, prefix, url_of = outside
    admin = await aio_pika.connect(amqp_url)
    replies = await (await admin.channel(publisher_confirms=True)).get_exchange(f"{ns}.decision-replies")
    for f in ("091", "092"):
        await replies.publish(aio_pika.Message(f"reply for {f}".encode()), f"reply.{f}", mandatory=True, timeout=5)

    case_system = await aio_pika.connect(url_of(f"{prefix}funder-092", "pw-092"))
    own = await (await case_system.channel()).declare_queue(f"{ns}.decision-replies.092", passive=True)
    assert (await own.get(timeout=5, no_ack=True)).body == b"reply for 092"
    with pytest.raises(ChannelAccessRefused):
        q = await (await case_system.channel()).declare_queue(f"{ns}.decision-replies.091", passive=True)
        await q.get(timeout=5)
    with pytest.raises(ChannelAccessRefused):  # nor make itself a queue bound to another's replies
        await (await case_system.channel()).declare_queue(f"{ns}.decision-replies.sneaky", durable=True)
    with pytest.raises(ChannelAccessRefused):  # nor forge replies
        ch = await case_system.channel(publisher_confirms=True)
        ex = await ch.get_exchange(f"{ns}.decision-replies", ensure=False)
        await ex.publish(aio_pika.Message(b"forged"), "reply.091", timeout=5)

    other = await aio_pika.connect(url_of(f"{prefix}funder-091", "pw-091"))
    mine = await (await other.channel()).declare_queue(f"{ns}.decision-replies.091", passive=True)
    assert (await mine.get(timeout=5, no_ack=True)).body == b"reply for 091"
    assert await mine.get(fail=False) is None
    await other.close()
    await case_system.close()
    await admin.close()


async def test_the_vouchers_service_user_consumes_decisions_and_publishes_replies(outside, amqp_url):  # noqa: ANN001
    from seteli_shared.bus import Bus
    from seteli_shared.testing import make_settings

    ns, prefix, url_of = outside
    user = await asyncio.to_thread(broker.add_system_user, "service", "vouchers", "pw-vouchers", ns, "/", prefix)
    try:
        settings = make_settings(service_name="vouchers", bus_namespace=ns,
                                 amqp_url=url_of(user, "pw-vouchers"), database_url="sqlite+aiosqlite:///:memory:")
        bus = Bus(settings)
        await bus.connect()
        q = await (await bus.connection.channel()).declare_queue(f"{ns}.vouchers.decisions", passive=True)
        await q.get(fail=False)  # it may read its decisions queue
        await bus.publish(b"{}", "reply.091", message_id="r1", exchange="decision-replies")  # and answer
        # and tell whether a funder's reply queue exists (an unknown publisher's decision is answered there)
        await (await bus.connection.channel()).declare_queue(f"{ns}.decision-replies.091", passive=True)
        with pytest.raises(ChannelAccessRefused):  # but not publish decisions
            ch = await bus.connection.channel(publisher_confirms=True)
            ex = await ch.get_exchange(f"{ns}.decisions", ensure=False)
            await ex.publish(aio_pika.Message(b"{}"), "decision.091", timeout=5)
        await bus.close()
        admin = await aio_pika.connect(amqp_url)
        got = await (await (await admin.channel()).declare_queue(f"{ns}.decision-replies.091", passive=True)).get(
            timeout=5, no_ack=True)
        assert got.user_id == user
        await admin.close()
    finally:
        await asyncio.to_thread(broker.remove_user, user)


def test_definitions_give_every_consumer_queue_a_dead_letter_queue_and_a_delivery_limit():
    d = broker.definitions("seteli", "/", 5)
    queues = {q["name"]: q["arguments"] for q in d["queues"]}
    for service in subscriptions():
        args = queues[f"seteli.{service}"]
        assert args["x-queue-type"] == "quorum" and args["x-delivery-limit"] == 5
        assert args["x-dead-letter-exchange"] == "seteli.dlx" and f"seteli.{service}.dlq" in queues


async def test_a_service_user_works_its_own_queues_and_publishes_events_only(outside, amqp_url):  # noqa: ANN001
    from seteli_shared.bus import Bus
    from seteli_shared.consumer import Consumer
    from seteli_shared.db import make_engine, session_factory
    from seteli_shared.testing import make_settings

    ns, prefix, url_of = outside
    settings = make_settings(service_name="payments", bus_namespace=ns,
                             amqp_url=url_of(f"{prefix}svc-payments", "pw-payments"),
                             database_url="sqlite+aiosqlite:///:memory:")
    bus = Bus(settings)
    await bus.connect()  # declares the events and dead-letter exchanges
    engine = make_engine(settings.database_url)
    consumer = Consumer(bus, session_factory(engine), f"{ns}.payments", {}, bind_keys=["voucher.issued.v1"])
    await consumer.declare()  # its own queue, dead-letter queue and bindings
    await bus.publish(b"{}", "voucher.issued.v1", message_id="m1")  # routed to its own queue: confirmed
    admin = await aio_pika.connect(amqp_url)
    q = await (await admin.channel()).declare_queue(f"{ns}.payments", passive=True)
    got = await q.get(timeout=5, no_ack=True)
    assert got.user_id == f"{prefix}svc-payments", "its events carry its broker-validated identity"
    with pytest.raises(ChannelAccessRefused):
        other = await (await bus.connection.channel()).declare_queue(f"{ns}.vouchers", passive=True)
        await other.get(timeout=5, fail=False)
    with pytest.raises(ChannelAccessRefused):
        await (await bus.connection.channel()).declare_queue(f"{ns}.somebody-else", durable=True)
    await bus.close()
    await engine.dispose()
    await admin.close()
