"""The payments app on PostgreSQL beside the real RabbitMQ with a spy queue on every event, a FixedClock
(2026-06-20), and the steps the live tests take: publish other services' events and wait until payments
has taken them, vouchers chosen for an approved provider, charges, runs, corrections, the ledger check."""
from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import date, datetime, timezone
from decimal import Decimal

import sys

import aio_pika
import httpx
import pytest
import structlog

import payments.app
from payments.settings import PaymentsSettings
from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.codes import new_code
from seteli_shared.events import Envelope, Event, ProviderApproved, VoucherIssued, VoucherProviderChosen
from seteli_shared.testing import inbox_took, make_settings

OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
TODAY = date(2026, 6, 20)


def as_(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


def charger(provider_id: str) -> dict:
    return as_("provider_charger", provider_id=provider_id)


class LiveWorld:
    def __init__(self, client: httpx.AsyncClient, app, bus: Bus, spy, clock: FixedClock):  # noqa: ANN001
        self.client, self.app, self.bus, self.spy, self.clock = client, app, bus, spy, clock

    async def publish(self, *events: Event, source: str) -> None:
        envs = [Envelope.wrap(e, source) for e in events]
        for env in envs:
            await self.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)
        await inbox_took(self.app.state.runtime.sessions, {e.id for e in envs})

    async def voucher(self, provider_id: str, n: int, units: str, funder_id: str = "091",
                      **terms) -> str:  # noqa: ANN003
        """A voucher (25.00 EUR/h, ``units`` hours for the year) whose client chose the provider, who is
        approved for home care by the funder."""
        voucher_id = f"v-{provider_id}-{n}"
        await self.publish(ProviderApproved(approval_id=f"ap-{provider_id}-{funder_id}", provider_id=provider_id,
                                            funder_id=funder_id, category="home_care",
                                            approved_at=datetime(2026, 1, 1, tzinfo=timezone.utc)), source="registry")
        await self.publish(VoucherIssued(
            voucher_id=voucher_id, funder_id=funder_id, client_ref=f"c-{n}", decision_ref=f"D-{provider_id}-{n}",
            category="home_care", unit="hour", units_per_period=Decimal(units), period="validity",
            value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
            issued_at=datetime(2026, 1, 1, tzinfo=timezone.utc), **terms),
            VoucherProviderChosen(voucher_id=voucher_id, funder_id=funder_id, provider_id=provider_id,
                                  category="home_care", chosen_at=datetime(2026, 1, 1, tzinfo=timezone.utc)),
            source="vouchers")
        return voucher_id

    async def charge(self, provider_id: str, voucher_id: str, ref: str, units: str, day: date = TODAY,
                     expect: int = 201) -> dict:
        r = await self.client.post("/charges", headers=charger(provider_id), json={
            "voucher_id": voucher_id, "provider_reference": ref, "service_date": day.isoformat(), "units": units})
        assert r.status_code == expect, r.text
        return r.json()

    async def settle(self) -> list[dict]:
        """An operator's run: everything accepted is settled (no hold-back under EUR 40)."""
        r = await self.client.post("/settlements/run", headers=OPERATOR)
        assert r.status_code == 200, r.text
        return r.json()

    async def statement(self, settlement_id: str, headers: dict = OPERATOR) -> dict:
        r = await self.client.get(f"/settlements/{settlement_id}/statement", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def correct(self, charge_id: str, body: dict, headers: dict, expect: int = 201) -> dict:
        r = await self.client.post(f"/charges/{charge_id}/corrections", json=body, headers=headers)
        assert r.status_code == expect, r.text
        return r.json()

    async def check(self) -> dict:
        check = (await self.client.get("/ledger/check", headers=OPERATOR)).json()
        assert check["ok"], check
        return check

    async def provider_with_vouchers(self, provider_id: str, n: int, units: str = "100",
                                     period: str = "validity") -> list[tuple[str, str]]:
        """An approved provider and ``n`` vouchers its clients chose it for: [(voucher_id, voucher_code)]."""
        await self.publish(ProviderApproved(approval_id=f"ap-{provider_id}", provider_id=provider_id, funder_id="091",
                                            category="home_care", approved_at=self.clock.now()), source="registry")
        out, events = [], []
        for i in range(n):
            voucher_id, code = f"v-{provider_id}-{i}", new_code()
            events += [VoucherIssued(
                voucher_id=voucher_id, funder_id="091", client_ref=f"c-{i}", decision_ref=f"D-{provider_id}-{i}",
                category="home_care", unit="hour", units_per_period=Decimal(units), period=period,
                value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                issued_at=self.clock.now(), voucher_code=code),
                VoucherProviderChosen(voucher_id=voucher_id, funder_id="091", provider_id=provider_id,
                                      category="home_care", chosen_at=self.clock.now())]
            out.append((voucher_id, code))
        for start in range(0, len(events), 500):
            await self.publish(*events[start:start + 500], source="vouchers")
        return out

    async def balances(self) -> dict:
        return (await self.client.get("/ledger/balances", headers=OPERATOR)).json()

    async def bus_events(self, type_suffix: str) -> list[dict]:
        """The events of this type the spy queue has received so far (taken from it)."""
        out = []
        while (message := await self.spy.get(no_ack=True, fail=False)) is not None:
            body = json.loads(message.body)
            if body["type"].endswith(type_suffix):
                out.append(body)
        return out


@pytest.fixture
def live_settings() -> dict:
    """Settings of the live app beyond the common ones: a test overrides them by parametrizing this name."""
    return {}


@pytest.fixture
def live_state() -> dict:
    """What the live app finds on its ``app.state`` at its start besides its clock (e.g. a test's own
    ``webhook_resolver``): a test module overrides this fixture."""
    return {}


@pytest.fixture
async def live(pg, namespace, amqp_url, live_settings, live_state):  # noqa: ANN001
    common = dict(environment="test", amqp_url=amqp_url, bus_namespace=namespace, relay_idle_seconds=0.05,
                  **live_settings)
    clock = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect(amqp_url)  # a spy takes every event, so none is unroutable
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        await spy.bind(exchange, "#")
        app = payments.app.create_app(PaymentsSettings(database_url=await pg.create("payments"), **common))
        app.state.clock = clock
        for name, value in live_state.items():
            setattr(app.state, name, value)
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=OPERATOR, timeout=300))
        bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        stack.push_async_callback(bus.close)
        yield LiveWorld(client, app, bus, spy, clock)


class LogLines(list):
    """The JSON lines the service logs, as they would be printed (a structlog logger factory and logger)."""

    def __call__(self, *args) -> "LogLines":  # noqa: ANN002
        return self

    def msg(self, message: str) -> None:
        self.append(message)

    debug = info = warning = warn = error = critical = exception = fatal = msg

    def events(self, name: str) -> list[dict]:
        return [e for e in map(json.loads, list(self)) if e.get("event") == name]


@pytest.fixture
def log_lines(live):  # noqa: ANN001, ANN201
    """What the live app logs from now on (its level and processors as configured; only the output is caught)."""
    lines = LogLines()
    structlog.configure(logger_factory=lines)
    yield lines
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stdout))
