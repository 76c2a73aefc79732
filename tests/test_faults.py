"""Faults answered honestly: each service on the real PostgreSQL and RabbitMQ, reached through a TCP proxy the
test controls (``seteli_shared.testing.TcpProxy``), so that the database or the broker can go down, come back,
or stall (accept and say nothing) without touching the machine's shared servers.

- A database that is down: every service answers a call that needs it 503 ``database_unavailable`` with
  ``Retry-After``, its readiness is red naming the reason, and once the database is back all is as before;
  a charge refused so changed nothing, and the same charge is taken afterwards.
- A database that stalls: the answer is a 503 within the statement timeout, not a request hanging on.
- A broker that is unreachable, or that holds the connection but confirms nothing: readiness is red with the
  reason, green again when the broker answers, and the event written meanwhile is published once.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import time
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from urllib.parse import urlparse

import aio_pika
import httpx
import pytest
from sqlalchemy import select

from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.events import Envelope, ProviderApproved, VoucherIssued, VoucherProviderChosen
from seteli_shared.manifest import NAMES
from seteli_shared.messaging import InboxMessage, OutboxMessage
from seteli_shared.testing import TcpProxy, eventually, make_settings

OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
CHARGER = {"Authorization": f"Bearer {mint('t:charger', ['provider_charger'], provider_id='p-faults')}"}
RETRY_AFTER = 7  # not the default (5): the answer must carry the setting


def _settings(service: str, **kw):  # noqa: ANN003, ANN202
    module = importlib.import_module(f"{service}.settings")
    cls = next(v for k, v in vars(module).items() if k.endswith("Settings") and k != "ServiceSettings")
    kw.setdefault("environment", "test")
    kw.setdefault("relay_idle_seconds", 0.05)
    kw.setdefault("retry_after_seconds", RETRY_AFTER)
    return cls(**kw)


@asynccontextmanager
async def running(service: str, settings):  # noqa: ANN001, ANN202
    """The service's app, started (migrations, bus, relay, consumers), and a client of it."""
    app = importlib.import_module(f"{service}.app").create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                     base_url="http://test", timeout=60) as client:
            yield app, client


def _via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    u = urlparse(url)
    return u._replace(netloc=f"{u.netloc.rpartition('@')[0]}@{proxy.address}" if "@" in u.netloc
                      else proxy.address).geturl()


def _unavailable(r: httpx.Response, cause: str | None = None) -> dict:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == str(RETRY_AFTER)
    err = r.json()["error"]
    assert err["reason"] == "database_unavailable" and err["details"]["retry_after_seconds"] == RETRY_AFTER, err
    if cause is not None:
        assert err["details"]["cause"] == cause, err
    assert "SELECT" not in r.text and "asyncpg" not in r.text  # nothing internal
    return err


async def _not_ready(client: httpx.AsyncClient, reason: str, check: str) -> dict:
    r = await client.get("/health/ready")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unavailable" and reason in body["reasons"], body
    assert body["checks"][check].startswith(f"failing: {reason}"), body
    return body


async def _ready(client: httpx.AsyncClient) -> bool:
    r = await client.get("/health/ready")
    return r.status_code == 200 and r.json()["reasons"] == []


@pytest.fixture
async def db_proxy(postgres_admin_dsn):  # noqa: ANN001
    u = urlparse(postgres_admin_dsn)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 5432).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def broker_proxy(amqp_url):  # noqa: ANN001
    u = urlparse(amqp_url)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 5672).start()
    yield proxy
    await proxy.close()


@pytest.mark.parametrize("service", NAMES)
async def test_a_database_that_is_down_is_503_with_retry_after_and_a_red_readiness_until_it_is_back(
        service, pg, namespace, amqp_url, db_proxy):  # noqa: ANN001
    url = await pg.create(service)
    settings = _settings(service, database_url=_via(url, db_proxy), amqp_url=amqp_url, bus_namespace=namespace)
    async with running(service, settings) as (_app, client):
        assert (await client.get("/audit", headers=OPERATOR)).status_code == 200
        assert await _ready(client)

        await db_proxy.down()  # open connections cut, new ones refused
        for _ in range(2):  # the pooled connection found dead, then a connection refused
            _unavailable(await client.get("/audit", headers=OPERATOR))
        body = await _not_ready(client, "database_unavailable", "database")
        assert body["checks"]["broker"] == "ok"
        assert (await client.get("/health/live")).status_code == 200  # the process itself is fine

        await db_proxy.up()
        assert (await client.get("/audit", headers=OPERATOR)).status_code == 200
        assert await _ready(client)


class Payments:
    """Payments with a voucher its client chose provider ``p-faults`` for, heard of from the bus."""

    def __init__(self, app, client: httpx.AsyncClient, bus: Bus):  # noqa: ANN001
        self.app, self.client, self.bus = app, client, bus

    async def hear(self, *events, source: str) -> None:  # noqa: ANN002
        envs = [Envelope.wrap(e, source) for e in events]
        for env in envs:
            await self.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)

        async def taken() -> bool:
            async with self.app.state.runtime.sessions() as session:
                seen = (await session.execute(select(InboxMessage.message_id).where(
                    InboxMessage.message_id.in_([e.id for e in envs])))).scalars().all()
            return len(seen) == len(envs)

        await eventually(taken)

    async def voucher(self) -> str:
        at = datetime(2026, 1, 1, tzinfo=timezone.utc)
        await self.hear(ProviderApproved(approval_id="ap-faults", provider_id="p-faults", funder_id="091",
                                         category="home_care", approved_at=at), source="registry")
        await self.hear(VoucherIssued(
            voucher_id="v-faults", funder_id="091", client_ref="c-faults", decision_ref="D-faults",
            category="home_care", unit="hour", units_per_period=Decimal("100"), period="validity",
            value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31), issued_at=at),
            VoucherProviderChosen(voucher_id="v-faults", funder_id="091", provider_id="p-faults", category="home_care",
                                  chosen_at=at), source="vouchers")
        return "v-faults"

    async def charge(self, ref: str) -> httpx.Response:
        return await self.client.post("/charges", headers=CHARGER, json={
            "voucher_id": "v-faults", "provider_reference": ref, "service_date": "2026-06-19", "units": "2"})

    async def charges(self) -> httpx.Response:
        return await self.client.get("/charges", headers=CHARGER)


@asynccontextmanager
async def payments_via(url: str, proxy: TcpProxy, namespace: str, amqp_url: str, **kw):  # noqa: ANN003, ANN202
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect(amqp_url)  # a spy takes every event, so none is unroutable
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        await spy.bind(exchange, "#")
        settings = _settings("payments", database_url=_via(url, proxy), amqp_url=amqp_url, bus_namespace=namespace,
                             **kw)
        app, client = await stack.enter_async_context(running("payments", settings))
        app.state.clock = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
        bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        stack.push_async_callback(bus.close)
        yield Payments(app, client, bus)


async def test_with_its_database_down_payments_refuses_a_charge_and_a_read_503_and_takes_the_charge_after(
        pg, namespace, amqp_url, db_proxy):  # noqa: ANN001
    url = await pg.create("payments")
    async with payments_via(url, db_proxy, namespace, amqp_url) as payments:
        await payments.voucher()
        assert (await payments.charges()).json()["items"] == []

        await db_proxy.down()
        _unavailable(await payments.charge("visit-1"))  # a write
        _unavailable(await payments.charges())  # a read
        await _not_ready(payments.client, "database_unavailable", "database")

        await db_proxy.up()
        assert (await payments.charges()).json()["items"] == []  # the refused charge changed nothing
        r = await payments.charge("visit-1")
        assert r.status_code == 201, r.text
        assert [c["provider_reference"] for c in (await payments.charges()).json()["items"]] == ["visit-1"]
        assert await _ready(payments.client)


async def test_a_stalled_database_is_503_within_the_statement_timeout_not_a_request_that_hangs(
        pg, namespace, amqp_url, db_proxy):  # noqa: ANN001
    url = await pg.create("payments")
    timeout = 1.5
    async with payments_via(url, db_proxy, namespace, amqp_url, db_statement_timeout_seconds=timeout,
                            db_connect_timeout_seconds=timeout, health_check_timeout_seconds=1.0) as payments:
        await payments.voucher()
        assert (await payments.charges()).status_code == 200

        db_proxy.stall()  # connections accepted, nothing answered
        for call in (payments.charges, lambda: payments.charge("visit-2")):
            started = time.monotonic()
            _unavailable(await call(), "timed_out")
            # the statement's timeout (and for the charge, which tries once more on a fresh connection, the
            # connect's): never a request left hanging on the stalled server
            assert time.monotonic() - started < 2 * timeout + 1.0
        started = time.monotonic()
        await _not_ready(payments.client, "database_unavailable", "database")
        assert time.monotonic() - started < 1.0 + 1.0

        db_proxy.forward()
        await eventually(lambda: _ready(payments.client), timeout=30)
        r = await payments.charge("visit-2")
        assert r.status_code == 201, r.text


async def test_a_broker_unreachable_or_stalled_makes_readiness_red_and_the_events_meanwhile_are_published_once(
        pg, namespace, amqp_url, broker_proxy):  # noqa: ANN001
    url = await pg.create("registry")
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect(amqp_url)  # the spy listens on the broker itself, not through the proxy
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        await spy.bind(exchange, "#")
        settings = _settings("registry", database_url=url, amqp_url=_via(amqp_url, broker_proxy),
                             bus_namespace=namespace, publish_timeout_seconds=1.5, health_check_timeout_seconds=1.0)
        app, client = await stack.enter_async_context(running("registry", settings))
        assert await _ready(client)

        # unreachable: the connection cut and new ones refused
        await broker_proxy.down()
        await eventually(lambda: _not_ready_reason(client, "broker_unreachable"), timeout=15)
        await broker_proxy.up()
        await eventually(lambda: _ready(client), timeout=30)  # the robust connection comes back by itself

        # stalled: the connection stays, nothing is confirmed; an event is written meanwhile and the relay
        # publishes it into the stalled connection (its frames go out, no confirm comes back)
        broker_proxy.stall()
        r = await client.post("/funders", headers=OPERATOR, json={"funder_id": "091", "name": "Helsinki",
                                                                    "kind": "municipality"})
        assert r.status_code == 201, r.text  # the outbox keeps the event: the request needs no broker
        message_id = await _outbox_message_id(app, "funder.registered.v1")

        async def publish_timed_out() -> bool:
            async with app.state.runtime.sessions() as session:
                row = (await session.execute(select(OutboxMessage).where(
                    OutboxMessage.message_id == message_id))).scalar_one()
            return row.sent_at is None and row.attempts >= 1

        await eventually(publish_timed_out, timeout=15)
        started = time.monotonic()
        body = await _not_ready(client, "broker_stalled", "broker")
        assert time.monotonic() - started < 1.0 + 1.5  # the probe's timeout, not a readiness that hangs
        assert body["checks"]["database"] == "ok"
        await asyncio.sleep(3.0)  # the relay does not publish again into the stalled connection meanwhile
        await _not_ready(client, "broker_stalled", "broker")

        broker_proxy.forward()
        await eventually(lambda: _ready(client), timeout=15)

        async def sent() -> bool:
            async with app.state.runtime.sessions() as session:
                row = (await session.execute(select(OutboxMessage).where(
                    OutboxMessage.message_id == message_id))).scalar_one()
            return row.sent_at is not None

        await eventually(sent, timeout=30)
        copies = await _drain_after(spy, quiet_seconds=4.0)
        registered = [m for m in copies if m["type"].endswith("funder.registered.v1")]
        assert [m["id"] for m in registered] == [message_id], registered  # once, not once per attempt


async def _not_ready_reason(client: httpx.AsyncClient, reason: str) -> bool:
    r = await client.get("/health/ready")
    return r.status_code == 503 and reason in r.json()["reasons"]


async def _outbox_message_id(app, routing_key: str) -> str:  # noqa: ANN001
    async with app.state.runtime.sessions() as session:
        return (await session.execute(select(OutboxMessage.message_id).where(
            OutboxMessage.routing_key == routing_key))).scalar_one()


async def _drain_after(queue, quiet_seconds: float) -> list[dict]:  # noqa: ANN001
    """Every message in the queue, read until none has come for ``quiet_seconds``."""
    out, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < quiet_seconds:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        out.append(json.loads(message.body))
        quiet_since = time.monotonic()
    return out


async def test_the_one_page_that_asks_the_broker_itself_gives_up_on_a_stalled_one(namespace, amqp_url,  # noqa: ANN001
                                                                                 broker_proxy, monkeypatch):
    """The services' calls need no broker (the outbox); the portal's operator page counts the dead letters on
    the broker itself. Stalled, it answers within its timeout (the page then says the broker did not answer)."""
    from portal import backend
    from portal.settings import PortalSettings

    monkeypatch.setattr(backend, "BROKER_TIMEOUT_SECONDS", 1.0)
    settings = PortalSettings(environment="test", amqp_url=_via(amqp_url, broker_proxy), bus_namespace=namespace)
    assert isinstance(await backend.dead_letter_counts(settings), list)  # answered
    broker_proxy.stall()
    started = time.monotonic()
    with pytest.raises((asyncio.TimeoutError, TimeoutError, ConnectionError)):
        await backend.dead_letter_counts(settings)
    assert time.monotonic() - started < 1.0 * 3 + 1.0


def test_only_the_databases_own_failures_count_as_an_outage():
    """What ``faults.database_fault`` takes for an outage (503) and what stays a failure of the service (500)."""
    import asyncpg
    from sqlalchemy import exc as sa_exc

    from seteli_shared.faults import database_fault

    def raised_in(module: str, exc: BaseException) -> BaseException:
        code = compile("raise exc", f"<{module}>", "exec")
        try:
            exec(code, {"__name__": module, "exc": exc})  # noqa: S102  (a frame of that module in the traceback)
        except BaseException as caught:  # noqa: BLE001
            return caught
        raise AssertionError("not raised")

    assert database_fault(raised_in("asyncpg.connect_utils", ConnectionRefusedError(111, "refused"))) == "unreachable"
    assert database_fault(raised_in("asyncpg.protocol", TimeoutError())) == "timed_out"
    assert database_fault(asyncpg.exceptions.ConnectionDoesNotExistError("gone")) == "connection_lost"
    assert database_fault(asyncpg.exceptions.CannotConnectNowError("starting")) == "unavailable"
    assert database_fault(asyncpg.exceptions.QueryCanceledError("statement timeout")) == "timed_out"
    assert database_fault(sa_exc.TimeoutError("pool")) == "timed_out"
    # not the database's: a timeout or a refused connection elsewhere, a constraint, a file, a bug
    assert database_fault(raised_in("payments.egress", TimeoutError())) is None
    assert database_fault(raised_in("payments.egress", ConnectionRefusedError(111, "refused"))) is None
    assert database_fault(asyncpg.exceptions.UniqueViolationError("duplicate")) is None
    assert database_fault(FileNotFoundError(2, "no such file")) is None
    assert database_fault(asyncpg.InterfaceError("cannot perform operation: another operation is in progress")) is None
