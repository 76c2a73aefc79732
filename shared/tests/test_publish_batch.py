"""The relay's batch publishing (``Bus.publish_many``), the outbox bodies written straight from values
(``DirectEventRows``) and the relay in a process of its own (``RELAY=process``, ``seteli-<svc> relay``),
against the real RabbitMQ and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import aio_pika
import pytest
from aio_pika import DeliveryMode, Message
from aio_pika.exceptions import PublishError
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from seteli_shared.bus import CONTENT_TYPE, Bus, Outgoing, PublishFrames
from seteli_shared.db import make_engine, session_factory
from seteli_shared.events import ChargeAccepted, Envelope
from seteli_shared.messaging import OutboxMessage
from seteli_shared.outbox import DirectEventRows, OutboxRelay, add_event
from seteli_shared.relay import RelayProcess
from seteli_shared.testing import eventually, make_settings

from .test_outbox_inbox import TestTick, count_messages


@pytest.mark.parametrize("body", [b"", b"x" * 10, "ä€\"\\".encode() * 7, b"y" * 300_000])
@pytest.mark.parametrize("correlation, type_", [(None, None), ("c-1", "fi.seteli.test.tick.v1")])
@pytest.mark.parametrize("user, app", [("guest", "payments"), ("", "payments"), ("svc-payments", "")])
def test_frames_are_byte_for_byte_what_aiormq_writes_for_the_same_message(body, correlation, type_, user, app):
    message = Message(body, delivery_mode=DeliveryMode.PERSISTENT, content_type=CONTENT_TYPE, message_id="m-1",
                      type=type_, correlation_id=correlation, app_id=app, user_id=user, headers={})
    max_content = 131072 - 8
    frames = [spec.Basic.Publish(exchange="ns.events", routing_key="test.tick.v1", mandatory=True),
              ContentHeader(properties=message.properties, body_size=len(body))]
    frames += [ContentBody(body[i:i + max_content]) for i in range(0, len(body), max_content)]
    theirs = ChannelFrame.marshall(channel_number=3, frames=frames).payload
    ours = PublishFrames(3, max_content, user, app).message("ns.events", "test.tick.v1", body, "m-1", type_,
                                                            correlation)
    assert ours == theirs



LINKS = ("00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01 "
         "00-2cf7651916cd43dd8448eb211c80319c-d7ad6b7169203331-01")


@pytest.mark.parametrize("body", [b"", b"x" * 10])
@pytest.mark.parametrize("tracelinks", [None, LINKS])
def test_frames_with_tracing_headers_are_what_aiormq_writes(body, tracelinks):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = Message(body, delivery_mode=DeliveryMode.PERSISTENT, content_type=CONTENT_TYPE, message_id="m-1",
                      type="fi.seteli.test.tick.v1", app_id="payments", user_id="guest",
                      headers=Outgoing(body, "k", "m-1", traceparent=traceparent, tracelinks=tracelinks).headers())
    max_content = 131072 - 8
    frames = [spec.Basic.Publish(exchange="ns.events", routing_key="test.tick.v1", mandatory=True),
              ContentHeader(properties=message.properties, body_size=len(body))]
    frames += [ContentBody(body[i:i + max_content]) for i in range(0, len(body), max_content)]
    theirs = ChannelFrame.marshall(channel_number=3, frames=frames).payload
    ours = PublishFrames(3, max_content, "guest", "payments").message(
        "ns.events", "test.tick.v1", body, "m-1", "fi.seteli.test.tick.v1", traceparent=traceparent,
        tracelinks=tracelinks)
    assert ours == theirs

@pytest.fixture
async def bus(namespace, amqp_url):  # noqa: ANN001
    b = Bus(make_settings(service_name="payments", bus_namespace=namespace, amqp_url=amqp_url,
                          publish_timeout_seconds=5))
    await b.connect()
    yield b
    await b.close()


async def _spy(bus: Bus, namespace: str, key: str = "test.tick.v1"):  # noqa: ANN202
    channel = await bus.connection.channel()
    q = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
    await q.bind(bus.settings.exchange_name, key)
    return q


async def test_a_batch_is_confirmed_message_by_message_with_publishes_properties(bus: Bus, namespace: str):
    spy = await _spy(bus, namespace)
    await bus.publish(b'{"n": -1}', "test.tick.v1", message_id="single", type_="fi.seteli.test.tick.v1")
    batch = [Outgoing(json.dumps({"n": n}).encode(), "test.tick.v1", f"m-{n}", "fi.seteli.test.tick.v1")
             for n in range(300)]
    batch.insert(150, Outgoing(b"{}", "nobody.listens.v1", "lost", "fi.seteli.nobody.listens.v1"))
    results = await bus.publish_many(batch)
    assert [type(r) for r in results[:150] + results[151:]] == [type(None)] * 300
    assert isinstance(results[150], PublishError), "an unroutable message fails alone"
    channel = await bus.channel.get_underlay_channel()
    assert not channel.confirmations and not channel.message_id_delivery_tag, "nothing left behind"

    got: list = []

    async def arrived():  # noqa: ANN202
        got.extend(await count_messages(spy))
        return len(got) >= 301

    await eventually(arrived)
    single, *rest = got
    assert [m.message_id for m in rest] == [f"m-{n}" for n in range(300)], "in order"
    for m in rest:
        for prop in ("content_type", "delivery_mode", "priority", "type", "app_id", "user_id", "headers",
                     "correlation_id", "content_encoding", "expiration", "reply_to", "timestamp"):
            assert getattr(m, prop) == getattr(single, prop), prop
    assert rest[7].delivery_mode == DeliveryMode.PERSISTENT and rest[7].body == b'{"n": 7}'
    # and the channel goes on with single publishes (delivery tags in step with the broker's)
    await bus.publish(b'{"n": 1000}', "test.tick.v1", message_id="after", type_="fi.seteli.test.tick.v1")


async def test_a_batch_after_the_channel_was_closed_opens_a_new_one(bus: Bus, namespace: str):
    await _spy(bus, namespace)
    await bus.channel.close()
    results = await bus.publish_many([Outgoing(b'{"n": 1}', "test.tick.v1", "m-1", "fi.seteli.test.tick.v1")])
    assert results == [None]


async def test_a_channel_closed_by_the_broker_fails_the_batch_at_once(namespace, amqp_url):  # noqa: ANN001
    """The broker closes the channel (a message whose user_id is not the connection's user): every message
    of the batch fails with the channel's reason, without waiting for the publish timeout."""

    class Impostor(Bus):
        @property
        def user(self) -> str:
            return "someone-else"

    bus = Impostor(make_settings(service_name="payments", bus_namespace=namespace, amqp_url=amqp_url,
                                 publish_timeout_seconds=20))
    await bus.connect()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await bus.publish_many([Outgoing(b"{}", "test.tick.v1", f"m-{n}", "fi.seteli.test.tick.v1")
                                          for n in range(50)])
        assert loop.time() - started < 10
        assert all(isinstance(r, Exception) for r in results), results
        assert "PRECONDITION_FAILED" in repr(results[0]) or "user_id" in repr(results[0]), results[0]
    finally:
        await bus.close()


def test_direct_bodies_are_the_envelopes_bodies():
    rows = DirectEventRows(ChargeAccepted, "payments")
    at = datetime(2026, 6, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    variants = [
        {"voucher_id": 'v-"ä\\\u0001\u2028', "tariff": None, "price_registered": None},
        {"voucher_id": "v1", "tariff": "sunday", "price_registered": True, "registered_price_cents": 2750,
         "price_list_id": "pl-1", "client_fee_cents": 300},
        {"voucher_id": "v2", "units": Decimal("1234.56"), "accepted_at": at.replace(microsecond=0)},
    ]
    for extra in [{}, *variants, *variants]:
        values = {"charge_id": "c-1", "voucher_id": "v", "funder_id": "091", "provider_id": "p-1",
                  "category": "home_care", "service_date": date(2026, 6, 1), "units": Decimal("1.50"),
                  "unit_price_cents": 2500, "amount_cents": 3750, "own_share_cents": 0, "accepted_at": at, **extra}
        row = rows.row(values)
        body = json.loads(row["body"])
        assert row["routing_key"] == "charge.accepted.v1" and row["attempts"] == 0
        assert body["id"] == row["message_id"] == body["correlationid"]
        expected = Envelope(id=row["message_id"], source="/seteli/payments", type=ChargeAccepted.event_type(),
                            time=row["created_at"], subject="c-1",
                            data=ChargeAccepted(**values).model_dump(mode="json"),
                            correlationid=row["message_id"]).model_dump_json()
        assert row["body"] == expected
    assert rows.direct is True


def test_direct_bodies_fall_back_when_validation_would_change_a_value():
    rows = DirectEventRows(ChargeAccepted, "payments")
    values = {"charge_id": "c-1", "voucher_id": "v", "funder_id": "091", "provider_id": "p-1",
              "category": "home_care", "service_date": "2026-06-01", "units": 1, "unit_price_cents": 2500,
              "amount_cents": 2500, "own_share_cents": 0, "accepted_at": "2026-06-01T12:00:00+00:00"}
    first, second = rows.row(values), rows.row(values)
    assert rows.direct is False
    for row in (first, second):
        assert json.loads(row["body"])["data"]["units"] == "1", "as the event model makes it"
    direct = DirectEventRows(ChargeAccepted, "payments")
    good = {**values, "service_date": date(2026, 6, 1), "units": Decimal("1.00"),
            "accepted_at": datetime(2026, 6, 1, 12, tzinfo=timezone.utc)}
    direct.row(good)
    assert direct.direct is True
    assert "surplus" not in direct.row({**good, "surplus": 1})["body"], "a name that is no field: the model's way"
    with pytest.raises(ValueError):  # a field missing: refused as the model refuses it
        direct.row({k: v for k, v in good.items() if k != "amount_cents"})


async def _outbox_world(pg, namespace: str, amqp_url: str):  # noqa: ANN001, ANN202
    url = await pg.create("relay")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: OutboxMessage.__table__.create(c))
    settings = make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url, database_url=url,
                             relay_idle_seconds=0.1)
    bus = Bus(settings)
    await bus.connect()
    return url, engine, bus, settings


async def _emit(engine, *ns: int) -> None:  # noqa: ANN001
    async with session_factory(engine)() as s, s.begin():
        for n in ns:
            await add_event(s, TestTick(n=n), "test")


async def _unsent(engine) -> int:  # noqa: ANN001
    async with engine.connect() as c:
        return (await c.exec_driver_sql("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one()


async def test_relay_as_a_child_process_is_woken_by_commits_and_ends_with_its_service(pg, namespace, amqp_url):  # noqa: ANN001
    _url, engine, bus, settings = await _outbox_world(pg, namespace, amqp_url)
    spy = await _spy(bus, namespace)
    child = RelayProcess(settings.model_copy(update={"relay_idle_seconds": 30.0}))  # only a wake-up is quick
    try:
        await _emit(engine, 1)  # before the start: published at the start
        await child.start()
        await eventually(lambda: _drained(engine), timeout=30)
        await _emit(engine, 2, 3)
        await eventually(lambda: _drained(engine), timeout=5)
        got: list = []

        async def arrived():  # noqa: ANN202
            got.extend(await count_messages(spy))
            return len(got) >= 3

        await eventually(arrived)
        assert sorted(json.loads(m.body)["data"]["n"] for m in got) == [1, 2, 3]
    finally:
        await child.stop()
        await bus.close()
        await engine.dispose()
    assert child.proc.returncode == 0, "its input closed: it finished and exited"


async def test_a_relay_child_that_ends_while_its_service_runs_is_started_again(pg, namespace, amqp_url):  # noqa: ANN001
    _url, engine, bus, settings = await _outbox_world(pg, namespace, amqp_url)
    await _spy(bus, namespace)
    child = RelayProcess(settings, restart_seconds=0.2)
    try:
        await child.start()
        first = child.proc.pid
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: child.proc.pid != first and child.proc.returncode is None, timeout=15)
        await _emit(engine, 7)
        await eventually(lambda: _drained(engine), timeout=30)
    finally:
        await child.stop()
        await bus.close()
        await engine.dispose()
    assert child.proc.returncode == 0


async def test_relay_child_ends_when_its_service_dies(pg, namespace, amqp_url):  # noqa: ANN001
    """A service killed with SIGKILL cannot stop its child: the child sees its input close and exits."""
    _url, engine, bus, settings = await _outbox_world(pg, namespace, amqp_url)
    await _spy(bus, namespace)
    script = ("import asyncio, json, os, sys\n"
              "from seteli_shared.relay import RelayProcess\n"
              "from seteli_shared.settings import ServiceSettings\n"
              "async def main():\n"
              "    child = RelayProcess(ServiceSettings(**json.loads(os.environ['S'])))\n"
              "    await child.start()\n"
              "    print(child.proc.pid, flush=True)\n"
              "    await asyncio.sleep(3600)\n"
              "asyncio.run(main())\n")
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, S=settings.model_dump_json(include={"service_name", "database_url", "amqp_url",
                                                                  "bus_namespace", "environment"})))
    seen = []
    try:
        line = b""
        while not line.strip().isdigit():  # the child's own log lines come on the same output
            line = await asyncio.wait_for(parent.stdout.readline(), 60)
            assert line, "the parent ended"
            seen.append(line)
        child_pid = int(line)
        await _emit(engine, 5)
        try:
            await eventually(lambda: _drained(engine), timeout=30)
        except AssertionError:
            seen.append(await asyncio.wait_for(parent.stdout.read(5000), 2))
            raise AssertionError(seen)
        parent.kill()
        await parent.wait()
        await eventually(lambda: not _alive(child_pid), timeout=15)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        await bus.close()
        await engine.dispose()


async def test_relay_command_publishes_beside_a_service_and_stops_on_sigterm(pg, namespace, amqp_url):  # noqa: ANN001
    url, engine, bus, settings = await _outbox_world(pg, namespace, amqp_url)
    await _spy(bus, namespace)
    command = Path(sys.executable).parent / "seteli-payments"
    proc = await asyncio.create_subprocess_exec(
        str(command), "relay", env=dict(os.environ, DATABASE_URL=url, AMQP_URL=amqp_url, BUS_NAMESPACE=namespace,
                                        ENVIRONMENT="test", RELAY_IDLE_SECONDS="0.1", MIGRATE_ON_START="false"))
    try:
        await _emit(engine, *range(40))
        await eventually(lambda: _drained(engine), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bus.close()
        await engine.dispose()


async def _drained(engine) -> bool:  # noqa: ANN001
    return await _unsent(engine) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (its parent gone, not yet reaped by init) counts as ended
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_relay_batches_publish_every_row_once(pg, namespace, amqp_url):  # noqa: ANN001
    _url, engine, bus, _settings = await _outbox_world(pg, namespace, amqp_url)
    spy = await _spy(bus, namespace)
    try:
        await _emit(engine, *range(1200))
        relay = OutboxRelay(engine, bus, batch_size=500)
        while await relay.relay_once():
            pass
        assert await _unsent(engine) == 0
        got: list = []

        async def arrived():  # noqa: ANN202
            got.extend(await count_messages(spy))
            return len(got) >= 1200

        await eventually(arrived, timeout=30)
        assert sorted(json.loads(m.body)["data"]["n"] for m in got) == list(range(1200))
    finally:
        await bus.close()
        await engine.dispose()


_ = aio_pika  # the spy queues are aio-pika's
