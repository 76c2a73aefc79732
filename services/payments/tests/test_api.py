"""Payments over HTTP, in this process, on its own database (PostgreSQL, and the embedded SQLite) and a
bus namespace of its own on the real RabbitMQ. The registry runs beside it (funders with their contract rates, approvals, over
the bus); the vouchers' events are published by the test as the vouchers service would."""
from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import date, datetime, timezone
from decimal import Decimal

import aio_pika
import httpx
import pytest

import payments.app
import registry.app
from payments.settings import PaymentsSettings
from registry.settings import RegistrySettings
from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.devtools import random_business_id
from seteli_shared.events import Envelope, Event, ProviderApproved, VoucherIssued, VoucherProviderChosen
from seteli_shared.testing import eventually, make_settings

IBAN = "FI2112345600000785"
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


class World:
    def __init__(self, registry: httpx.AsyncClient, payments: httpx.AsyncClient, bus: Bus, clock: FixedClock):
        self.registry, self.payments, self.bus, self.clock = registry, payments, bus, clock

    async def publish(self, event: Event, source: str) -> None:
        env = Envelope.wrap(event, source)
        await self.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)

    async def voucher(self, funder_id: str, provider_id: str, n: int) -> str:
        voucher_id = f"v-{funder_id}-{provider_id[:8]}-{n}"
        await self.publish(VoucherIssued(
            voucher_id=voucher_id, funder_id=funder_id, client_ref=f"asiakas-{n}", decision_ref=f"D-{n}",
            category="home_care", unit="hour", units_per_period=Decimal("100"), period="validity",
            value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
            issued_at=self.clock.now()), "vouchers")
        await self.publish(VoucherProviderChosen(voucher_id=voucher_id, funder_id=funder_id, provider_id=provider_id,
                                                 category="home_care", chosen_at=self.clock.now()), "vouchers")
        return voucher_id

    async def charge(self, provider_id: str, voucher_id: str, ref: str, day: int, units: str = "1") -> dict:
        """Charge once payments has heard of the voucher; the clock moves a second after each charge."""
        body = {"voucher_id": voucher_id, "provider_reference": ref, "service_date": f"2026-06-{day:02d}",
                "units": units}

        async def accepted():  # noqa: ANN202
            r = await self.payments.post("/charges", json=body, headers=bearer("provider_charger",
                                                                               provider_id=provider_id))
            assert r.status_code in (201, 404, 422), r.text
            return r.json() if r.status_code == 201 else None

        charge = await eventually(accepted)
        self.clock.advance(seconds=1)
        return charge


@pytest.fixture(params=["postgresql", "sqlite"])
async def world(request, pg, namespace, amqp_url, tmp_path):  # noqa: ANN001
    async def database(name: str) -> str:
        return await pg.create(name) if request.param == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / name}.db"

    common = dict(environment="test", amqp_url=amqp_url, bus_namespace=namespace, relay_idle_seconds=0.05)
    clock = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect(amqp_url)  # a spy takes every event, so none is unroutable
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        await spy.bind(exchange, "#")
        clients = []
        for module, settings in (
            (registry.app, RegistrySettings(database_url=await database("registry"), **common)),
            # funders payments has not heard of are settled at this (not the seed's 5 %)
            (payments.app, PaymentsSettings(database_url=await database("payments"),
                                            operator_fee_rate=Decimal("0.04"), **common)),
        ):
            app = module.create_app(settings)
            app.state.clock = clock
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test", headers=OPERATOR)))
        bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        stack.push_async_callback(bus.close)
        yield World(*clients, bus, clock)


async def _approved_provider(w: World, name: str, funders: list[str]) -> str:
    r = await w.registry.post("/providers", json={"business_id": random_business_id(), "name": name, "iban": IBAN})
    provider_id = r.json()["id"]
    for funder_id in funders:
        r = await w.registry.post(f"/providers/{provider_id}/approvals",
                                  json={"funder_id": funder_id, "category": "home_care"})
        assert r.status_code == 201, r.text
    return provider_id


async def test_each_funder_is_settled_at_its_contract_rate(world: World):
    w = world
    assert (await w.registry.post("/funders", json={"funder_id": "091", "name": "Helsinki", "kind": "municipality",
                                                    "operator_fee_rate": "0.03"})).status_code == 201
    assert (await w.registry.post("/funders", json={"funder_id": "092", "name": "Vantaa",
                                                    "kind": "municipality"})).status_code == 201
    p = await _approved_provider(w, "Hoiva Oy", ["091", "092"])
    # a funder payments never heard of (its approval arrives, its registration does not)
    await w.publish(ProviderApproved(approval_id="a-555", provider_id=p, funder_id="555", category="home_care",
                                     approved_at=w.clock.now()), "registry")
    for n, funder_id in enumerate(("091", "092", "555")):
        await w.charge(p, await w.voucher(funder_id, p, n), f"visit-{n}", day=10, units="4")  # 100.00 EUR each

    r = await w.payments.post("/settlements/run")
    assert r.status_code == 200, r.text
    by_funder = {s["funder_id"]: (s["fee_rate"], s["gross_cents"], s["fee_cents"], s["net_cents"]) for s in r.json()}
    assert by_funder == {"091": ("0.03", 10000, 300, 9700), "092": ("0.05", 10000, 500, 9500),
                         "555": ("0.04", 10000, 400, 9600)}
    assert (await w.payments.get("/ledger/check")).json()["ok"]


async def test_charges_are_listed_in_pages_each_caller_its_own(world: World):
    w = world
    for funder_id in ("091", "092"):
        await w.registry.post("/funders", json={"funder_id": funder_id, "name": funder_id, "kind": "municipality"})
    p = await _approved_provider(w, "Hoiva Oy", ["091", "092"])
    q = await _approved_provider(w, "Muu Oy", ["091"])
    v1, v2, v3 = await w.voucher("091", p, 1), await w.voucher("092", p, 2), await w.voucher("091", q, 3)
    p_091 = [await w.charge(p, v1, f"p1-{day}", day) for day in (1, 2, 3, 4, 5)]
    p_092 = await w.charge(p, v2, "p2-1", 6)
    q_091 = await w.charge(q, v3, "q3-1", 7)

    async def pages(headers: dict, limit: int, **filters) -> list[list[str]]:  # noqa: ANN003
        out, cursor = [], None
        while True:
            params = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
            r = await w.payments.get("/charges", params=params, headers=headers)
            assert r.status_code == 200, r.text
            out.append([c["id"] for c in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return out

    everything = [c["id"] for c in (*p_091, p_092, q_091)]  # in the order they were accepted
    assert await pages(OPERATOR, 3) == [everything[:3], everything[3:6], everything[6:]]
    assert sum(await pages(OPERATOR, 500), []) == everything
    charger_p = bearer("provider_charger", provider_id=p)
    assert sum(await pages(charger_p, 2), []) == everything[:6]
    # a tenant's list is its own whatever the query asks
    assert sum(await pages(bearer("provider_billing_system", provider_id=q), 2, provider_id=p), []) == []
    assert sum(await pages(bearer("funder_finance", funder_id="092"), 2), []) == [p_092["id"]]
    assert sum(await pages(bearer("funder_reporting", funder_id="091"), 10, funder_id="092"), []) == []
    assert sum(await pages(bearer("funder_reporting", funder_id="091"), 10), []) == everything[:5] + everything[6:]
    # filters
    assert sum(await pages(OPERATOR, 2, voucher_id=v1), []) == everything[:5]
    assert sum(await pages(charger_p, 10, service_date_from="2026-06-02", service_date_to="2026-06-04"), []) == \
        everything[1:4]
    await w.payments.post("/settlements/run")
    assert sum(await pages(OPERATOR, 10, status="accepted"), []) == []
    assert sum(await pages(OPERATOR, 10, status="settled"), []) == everything
    assert (await w.payments.get("/charges", params={"status": "lost"})).status_code == 422
    assert (await w.payments.get("/charges", headers=bearer("client", voucher_id=v1))).status_code == 403
    assert (await w.payments.get("/charges", params={"cursor": "bm90LWEtY3Vyc29y"})).status_code == 400

    settlements = await w.payments.get("/settlements", params={"limit": 1})
    assert len(settlements.json()["items"]) == 1 and settlements.json()["next_cursor"]
    rest = await w.payments.get("/settlements", params={"limit": 5, "cursor": settlements.json()["next_cursor"]})
    assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
    mine = (await w.payments.get("/settlements", headers=bearer("funder_finance", funder_id="092"))).json()
    assert [s["funder_id"] for s in mine["items"]] == ["092"]


async def test_a_charge_request_is_checked_before_anything_is_stored(world: World):
    charger = bearer("provider_charger", provider_id="p-1")
    r = await world.payments.post("/charges", headers=charger, json={
        "voucher_id": "v-1", "provider_reference": "   ", "service_date": "2026-06-01", "units": "0", "tip": 5})
    assert r.status_code == 422
    assert r.json()["error"]["reason"] == "invalid_request"
    fields = {e["loc"][-1] for e in r.json()["error"]["details"]["errors"]}
    assert fields == {"provider_reference", "units", "tip"}, "every refused field at once, unknown ones too"
