"""Payments over HTTP, in this process, on its own database (PostgreSQL, and the embedded SQLite) and a
bus namespace of its own on the real RabbitMQ. The registry runs beside it (funders with their contract rates, approvals, over
the bus); the vouchers' events are published by the test as the vouchers service would."""
from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta, timezone
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
from seteli_shared.events import (Envelope, Event, PriceListPublished, ProviderApproved, ProviderReinstated,
                                  ProviderRevoked, ProviderSuspended, VoucherIssued, VoucherProviderChosen)
from seteli_shared.testing import eventually, inbox_took, make_settings

IBAN = "FI2112345600000785"
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


class World:
    def __init__(self, registry: httpx.AsyncClient, payments: httpx.AsyncClient, bus: Bus, clock: FixedClock):
        self.registry, self.payments, self.bus, self.clock = registry, payments, bus, clock
        self.payments_app = None

    async def publish(self, event: Event, source: str, env: Envelope | None = None) -> Envelope:
        """Publish as ``source`` would (``env`` again: the same message redelivered)."""
        env = env or Envelope.wrap(event, source)
        await self.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)
        return env

    async def taken(self, *envs: Envelope) -> None:
        """Wait until payments' consumer has taken these messages (its inbox has their ids)."""
        await inbox_took(self.payments_app.state.runtime.sessions, {e.id for e in envs})

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
        clients, apps = [], []
        for module, settings in (
            (registry.app, RegistrySettings(database_url=await database("registry"), **common)),
            # funders payments has not heard of are settled at this (not the seed's 5 %)
            (payments.app, PaymentsSettings(database_url=await database("payments"),
                                            operator_fee_rate=Decimal("0.04"), **common)),
        ):
            app = module.create_app(settings)
            app.state.clock = clock
            apps.append(app)
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test", headers=OPERATOR)))
        bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        stack.push_async_callback(bus.close)
        w = World(*clients, bus, clock)
        w.payments_app = apps[1]
        yield w


async def _approved_provider(w: World, name: str, funders: list[str]) -> str:
    r = await w.registry.post("/providers", json={"business_id": random_business_id(), "name": name, "iban": IBAN})
    provider_id = r.json()["id"]
    for funder_id in funders:
        r = await w.registry.post(f"/funders/{funder_id}/rulebooks", json={
            "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
        assert r.status_code in (200, 201), r.text  # a funder approves for the categories it has a rulebook for
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


# ------------------------------------------------------------------ the approval's life cycle and registered prices
def _life(cls, provider_id: str, at: datetime, **kw) -> Event:  # noqa: ANN001, ANN003
    stamp = {ProviderApproved: "approved_at", ProviderSuspended: "suspended_at", ProviderReinstated: "reinstated_at",
             ProviderRevoked: "revoked_at"}
    if cls in (ProviderSuspended, ProviderRevoked):
        kw.setdefault("reason", "insurance_lapsed")
    return cls(approval_id=f"ap-{provider_id}", provider_id=provider_id, funder_id="091", category="home_care",
               **{stamp[cls]: at}, **kw)


async def _attempt(w: World, provider_id: str, voucher_id: str, ref: str, day: str, **extra) -> httpx.Response:  # noqa: ANN003
    return await w.payments.post("/charges", headers=bearer("provider_charger", provider_id=provider_id), json={
        "voucher_id": voucher_id, "provider_reference": ref, "service_date": day, "units": "1", **extra})


async def _answer(w: World, provider_id: str, voucher_id: str, ref: str, day: str, expect: tuple[int, str | None],
                  **extra) -> dict:  # noqa: ANN003
    """Charge until the answer is the expected one (the events it depends on travel the bus)."""
    async def answered():  # noqa: ANN202
        r = await _attempt(w, provider_id, voucher_id, ref, day, **extra)
        got = (r.status_code, r.json()["error"]["reason"] if r.status_code >= 400 else None)
        return r.json() if got == expect else None

    return await eventually(answered)


async def _approved(w: World, provider_id: str, n: int) -> str:
    """An approval of funder 091 for home care heard over the bus, and a voucher whose client chose it."""
    await w.publish(_life(ProviderApproved, provider_id, w.clock.now()), "registry")
    return await w.voucher("091", provider_id, n)


async def test_a_charge_for_a_service_on_or_after_the_suspension_date_is_refused_and_one_before_accepted(world):  # noqa: ANN001
    w, p = world, "prov-susp"
    v = await _approved(w, p, 1)
    now = w.clock.now()
    suspension = await w.publish(_life(ProviderSuspended, p, now, effective_from=date(2026, 6, 10)), "registry")
    await w.taken(suspension)  # else a charge may beat it and be accepted (then only ever repeated)
    refused = await _answer(w, p, v, "s-1", "2026-06-10", (422, "provider_suspended"))
    assert refused["error"]["details"]["effective_from"] == "2026-06-10"
    before = await _answer(w, p, v, "s-2", "2026-06-09", (201, None))
    assert before["service_date"] == "2026-06-09"
    assert (await _attempt(w, p, v, "s-3", "2026-06-15")).json()["error"]["reason"] == "provider_suspended"

    # a stale reinstatement and the suspension redelivered change nothing; a newer reinstatement lifts it
    stale = await w.publish(_life(ProviderReinstated, p, now - timedelta(minutes=1)), "registry")
    await w.publish(None, "registry", env=suspension)
    await w.taken(stale, suspension)
    assert (await _attempt(w, p, v, "s-3", "2026-06-15")).json()["error"]["reason"] == "provider_suspended"
    await w.publish(_life(ProviderReinstated, p, now + timedelta(minutes=1)), "registry")
    await _answer(w, p, v, "s-3", "2026-06-15", (201, None))
    again = await w.publish(_life(ProviderSuspended, p, now, effective_from=date(2026, 6, 10)), "registry")
    await w.taken(again)
    assert (await _attempt(w, p, v, "s-4", "2026-06-16")).status_code == 201, "the older suspension stays lifted"


async def test_a_revoked_provider_charges_only_for_earlier_services_whatever_arrives_later(world):  # noqa: ANN001
    w, p = world, "prov-rev"
    v = await _approved(w, p, 2)
    now = w.clock.now()
    revocation = await w.publish(_life(ProviderRevoked, p, now, effective_from=date(2026, 6, 12),
                                       reason="funder_decision"), "registry")
    await w.taken(revocation)
    await _answer(w, p, v, "r-1", "2026-06-12", (422, "provider_revoked"))
    await _answer(w, p, v, "r-2", "2026-06-11", (201, None))
    late = [await w.publish(_life(ProviderReinstated, p, now - timedelta(hours=1)), "registry"),
            await w.publish(_life(ProviderReinstated, p, now + timedelta(hours=1)), "registry"),
            await w.publish(_life(ProviderApproved, p, now), "registry"),
            await w.publish(None, "registry", env=revocation)]
    await w.taken(*late)
    r = await _attempt(w, p, v, "r-3", "2026-06-19")
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "provider_revoked")


def _price_list(pid: str, provider_id: str, effective_from: date, cents: int, published_at: datetime,
                **tariffs: int) -> PriceListPublished:
    return PriceListPublished(price_list_id=pid, provider_id=provider_id, funder_id="091", category="home_care",
                              unit="hour", unit_price_cents=cents, tariffs=tariffs, effective_from=effective_from,
                              published_at=published_at)


async def test_the_registered_price_of_the_service_date_and_tariff_is_charged_and_a_higher_one_refused(world):  # noqa: ANN001
    w, p = world, "prov-price"
    v = await _approved(w, p, 3)  # the voucher is worth 25.00 EUR an hour
    t = w.clock.now() - timedelta(days=30)
    # the correction of June's list (same day, published later) arrives before the list it corrects
    lists = [await w.publish(_price_list("pl-jun-fix", p, date(2026, 6, 10), 3100, t + timedelta(hours=2),
                                         saturday=3600, sunday=4500), "registry"),
             await w.publish(_price_list("pl-may", p, date(2026, 5, 1), 2800, t, sunday=4000), "registry"),
             await w.publish(_price_list("pl-jun", p, date(2026, 6, 10), 3000, t + timedelta(hours=1),
                                         sunday=9900), "registry")]
    await w.taken(*lists)

    may = await _answer(w, p, v, "pr-1", "2026-06-09", (201, None))
    assert (may["unit_price_cents"], may["amount_cents"], may["own_share_cents"], may["price_registered"],
            may["price_list_id"]) == (2800, 2500, 300, True, "pl-may"), "history: May's list until 10 June"
    sunday = await _answer(w, p, v, "pr-2", "2026-06-14", (201, None), tariff="sunday", units="1.5")
    assert (sunday["unit_price_cents"], sunday["tariff"], sunday["amount_cents"], sunday["own_share_cents"],
            sunday["price_list_id"]) == (4500, "sunday", 3750, 3000, "pl-jun-fix")
    evening = await _answer(w, p, v, "pr-3", "2026-06-15", (201, None), tariff="weekday_evening")
    assert (evening["unit_price_cents"], evening["registered_price_cents"]) == (3100, 3100), "no such tariff: base"

    above = await _attempt(w, p, v, "pr-4", "2026-06-15", unit_price_cents=3101)
    assert (above.status_code, above.json()["error"]["reason"]) == (422, "price_above_registered_price")
    assert above.json()["error"]["details"]["registered_price_cents"] == 3100
    above = await _attempt(w, p, v, "pr-4", "2026-06-14", unit_price_cents=4501, tariff="sunday")
    assert above.json()["error"]["details"]["registered_price_cents"] == 4500
    lower = await _attempt(w, p, v, "pr-5", "2026-06-15", unit_price_cents=2900)
    assert lower.status_code == 201 and (lower.json()["unit_price_cents"], lower.json()["own_share_cents"]) == (
        2900, 400), "a lower price is taken as sent"

    # a price list heard of again changes nothing, even under a new message id
    again = [await w.publish(None, "registry", env=lists[0]),
             await w.publish(_price_list("pl-jun-fix", p, date(2026, 6, 10), 9999, t), "registry")]
    await w.taken(*again)
    r = await _attempt(w, p, v, "pr-6", "2026-06-16")
    assert (r.status_code, r.json()["unit_price_cents"]) == (201, 3100)
    charge = (await w.payments.get(f"/charges/{r.json()['id']}")).json()
    assert (charge["price_registered"], charge["price_list_id"]) == (True, "pl-jun-fix")


async def test_without_a_price_list_in_force_the_charge_is_accepted_and_says_so(world):  # noqa: ANN001
    w, p = world, "prov-nolist"
    v = await _approved(w, p, 4)
    sent = await _answer(w, p, v, "n-1", "2026-06-01", (201, None), unit_price_cents=2700)
    assert (sent["unit_price_cents"], sent["own_share_cents"], sent["price_registered"],
            sent["registered_price_cents"], sent["tariff"]) == (2700, 200, False, None, None)
    default = await _attempt(w, p, v, "n-2", "2026-06-02")
    assert (default.json()["unit_price_cents"], default.json()["price_registered"]) == (2500, False)
    r = await _attempt(w, p, v, "n-3", "2026-06-03", tariff="saturday")
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "tariff_not_available")
    # a list taking effect later leaves earlier services without a registered price
    await w.taken(await w.publish(_price_list("pl-later", p, date(2026, 6, 10), 2600, w.clock.now()), "registry"))
    early = await _attempt(w, p, v, "n-4", "2026-06-09", unit_price_cents=9000)
    assert (early.status_code, early.json()["price_registered"]) == (201, False)
    later = await _attempt(w, p, v, "n-5", "2026-06-10", unit_price_cents=9000)
    assert later.json()["error"]["reason"] == "price_above_registered_price"
