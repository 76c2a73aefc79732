"""The voucher's life cycle on the real PostgreSQL and RabbitMQ: vouchers and payments run in this process on
databases of their own and a bus namespace of their own, and talk over the bus (``VoucherIssued``,
``VoucherProviderChosen`` to payments; ``ChargeAccepted`` back to vouchers). Approvals, funders, names and price
lists are fed straight to each service's handlers, as the registry's events would be. One FixedClock for both."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
from sqlmodel import select

import payments.app
import payments.projections.handlers as pay_handlers
import vouchers.app
import vouchers.handlers as vou_handlers
from payments.settings import PaymentsSettings
from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.db import unit_of_work
from seteli_shared.events import (Envelope, FunderRegistered, PriceListPublished, ProviderApproved,
                                  ProviderRegistered, ProviderSuspended, VoucherRevoked)
from seteli_shared.logging import new_id
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import eventually
from vouchers import lifecycle
from vouchers.usage import charges_corrected
from vouchers.models import Voucher
from vouchers.settings import VouchersSettings

F1 = "091"
P, Q, R, S = "prov-p", "prov-q", "prov-r", "prov-s"
START = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}:{new_id()[:6]}', [role], **claims)}"}


DM = bearer("funder_decision_maker", funder_id=F1)
OPERATOR = bearer("operator")


class World:
    def __init__(self, vou_app, pay_app, clock: FixedClock):  # noqa: ANN001
        self.vou_app, self.pay_app, self.clock = vou_app, pay_app, clock
        self.vou = httpx.AsyncClient(transport=httpx.ASGITransport(app=vou_app), base_url="http://vouchers")
        self.pay = httpx.AsyncClient(transport=httpx.ASGITransport(app=pay_app), base_url="http://payments")

    async def feed(self, app, handler, event) -> None:  # noqa: ANN001
        async with unit_of_work(app.state.runtime.sessions) as session:
            await handler(session, Envelope.wrap(event, "registry"), event)

    async def feed_run(self, app, batch_handler, events: list, source: str = "payments") -> None:  # noqa: ANN001
        """Events handed to a batch handler as the consumer hands it a run of them (one transaction)."""
        async with unit_of_work(app.state.runtime.sessions) as session:
            await batch_handler(session, [(Envelope.wrap(e, source), e) for e in events])

    async def issue(self, **over) -> dict:  # noqa: ANN003
        body = {"decision_ref": f"D-{new_id()[:12]}", "client_ref": f"c-{new_id()[:8]}", "category": "home_care",
                "units_per_period": "10", "value_per_unit_cents": 2500,
                "valid_from": "2026-06-01", "valid_until": "2026-12-31", **over}
        r = await self.vou.post("/vouchers", json=body, headers=DM)
        assert r.status_code == 201, r.text
        return r.json()

    async def choose(self, voucher_id: str, provider: str) -> None:
        r = await self.vou.post(f"/vouchers/{voucher_id}/provider", json={"provider_id": provider}, headers=DM)
        assert r.status_code == 200, r.text

    async def charge(self, provider: str, voucher_id: str, day: str, units: str, ref: str | None = None,
                     wait: bool = True) -> httpx.Response:
        """Charge; with ``wait``, retry while payments has not yet heard of the voucher or its latest choice."""
        body = {"voucher_id": voucher_id, "provider_reference": ref or f"ref-{new_id()[:10]}", "service_date": day,
                "units": units}
        headers = bearer("provider_charger", provider_id=provider)

        async def answered():  # noqa: ANN202
            r = await self.pay.post("/charges", json=body, headers=headers)
            if wait and r.status_code in (404, 422) and r.json()["error"]["reason"] in (
                    "not_found", "voucher_not_found", "provider_not_chosen", "not_chosen_provider"):
                return None
            return r

        return await eventually(answered)

    async def client_view(self, voucher_id: str) -> dict:
        r = await self.vou.get(f"/vouchers/{voucher_id}", headers=bearer("client", voucher_id=voucher_id))
        assert r.status_code == 200, r.text
        return r.json()

    async def usage_after_charges(self, voucher_id: str, charges: int) -> dict:
        """The client's view once vouchers has folded ``charges`` accepted charges of the voucher."""
        async def folded():  # noqa: ANN202
            async with self.vou_app.state.runtime.sessions() as s:
                n = len((await s.exec(select(lifecycle.Usage).where(lifecycle.Usage.voucher_id == voucher_id))).all())
            return n >= charges

        await eventually(folded)
        return await self.client_view(voucher_id)

    async def outbox(self, routing_key: str) -> list[dict]:
        async with self.vou_app.state.runtime.sessions() as s:
            rows = (await s.exec(select(OutboxMessage).where(OutboxMessage.routing_key == routing_key))).all()
        return [json.loads(r.body) for r in rows]


def reason(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["reason"]


@pytest.fixture
async def world(pg, namespace, amqp_url):  # noqa: ANN001
    clock = FixedClock(START)
    vou_db, pay_db = await pg.create("vouchers"), await pg.create("payments")
    vou_app = vouchers.app.create_app(VouchersSettings(environment="test", database_url=vou_db, amqp_url=amqp_url,
                                                       bus_namespace=namespace, relay_idle_seconds=0.05))
    pay_app = payments.app.create_app(PaymentsSettings(environment="test", database_url=pay_db, amqp_url=amqp_url,
                                                       bus_namespace=namespace, relay_idle_seconds=0.05))
    vou_app.state.clock = pay_app.state.clock = clock
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(vou_app.router.lifespan_context(vou_app))
        await stack.enter_async_context(pay_app.router.lifespan_context(pay_app))
        w = World(vou_app, pay_app, clock)
        await stack.enter_async_context(w.vou)
        await stack.enter_async_context(w.pay)
        funder = FunderRegistered(funder_id=F1, name="Kunta 091", kind="municipality",
                                  operator_fee_rate=Decimal("0.05"), registered_at=START)
        await w.feed(vou_app, vou_handlers.on_funder_registered, funder)
        await w.feed(pay_app, pay_handlers.on_funder_registered, funder)
        for provider in (P, Q):
            approved = ProviderApproved(approval_id=new_id(), provider_id=provider, funder_id=F1, category="home_care",
                                        approved_at=START - timedelta(days=100))
            await w.feed(vou_app, vou_handlers.on_provider_approved, approved)
            await w.feed(pay_app, pay_handlers.APPROVALS.on_provider_approved, approved)
        w.database_url = vou_db
        yield w


# ------------------------------------------------------------------ units used and left, per period
async def test_units_used_and_left_reset_each_month_unless_the_funder_carries_them_over(world):  # noqa: ANN001
    plain = await world.issue()
    carried = await world.issue(carry_over=True)
    assert carried["carry_over"] is True and plain["carry_over"] is False
    for v in (plain, carried):
        await world.choose(v["id"], P)
        assert (await world.charge(P, v["id"], "2026-06-10", "4")).status_code == 201

    june = (await world.usage_after_charges(plain["id"], 1))["usage"]
    assert (june["period_start"], june["period_end"]) == ("2026-06-01", "2026-06-30")
    assert (june["units_used"], june["units_left"], june["units_carried_over"]) == ("4.00", "6.00", "0.00")
    assert (june["value_used_cents"], june["value_left_cents"]) == (10000, 15000)
    funder_view = (await world.vou.get(f"/vouchers/{plain['id']}", headers=DM)).json()
    assert funder_view["usage"]["units_left"] == "6.00"
    provider_view = (await world.vou.get(f"/vouchers/{plain['id']}",
                                         headers=bearer("provider_manager", provider_id=P))).json()
    assert "usage" not in provider_view

    world.clock.at = datetime(2026, 7, 5, 9, tzinfo=timezone.utc)  # a new month
    july = (await world.client_view(plain["id"]))["usage"]
    assert (july["period_start"], july["units_used"], july["units_left"], july["units_carried_over"]) == (
        "2026-07-01", "0.00", "10.00", "0.00"), "unused units do not carry over by default"
    july_carried = (await world.usage_after_charges(carried["id"], 1))["usage"]
    assert (july_carried["units_carried_over"], july_carried["units_left"]) == ("6.00", "16.00")

    # payments charges by the same rule
    assert reason(await world.charge(P, plain["id"], "2026-07-02", "11")) == (422, "units_exceeded")
    assert (await world.charge(P, plain["id"], "2026-07-02", "10")).status_code == 201
    assert (await world.charge(P, carried["id"], "2026-07-02", "16")).status_code == 201
    assert reason(await world.charge(P, carried["id"], "2026-07-03", "0.5")) == (422, "units_exceeded")
    # June is still June's: 6 units left there (a late charge for a June service)
    assert (await world.charge(P, carried["id"], "2026-06-20", "6")).status_code == 201
    after = (await world.usage_after_charges(carried["id"], 3))["usage"]
    # June is now fully used, so it carries nothing into July: July's own 10 are used by the 16 charged
    assert (after["units_carried_over"], after["units_used"], after["units_left"]) == ("0.00", "16.00", "0.00")


async def test_a_whole_validity_voucher_fully_used_becomes_exhausted(world):  # noqa: ANN001
    v = await world.issue(period="validity", units_per_period="5")
    await world.choose(v["id"], P)
    assert (await world.charge(P, v["id"], "2026-06-02", "3")).status_code == 201
    assert (await world.usage_after_charges(v["id"], 1))["status"] == "provider_chosen"
    assert (await world.charge(P, v["id"], "2026-06-03", "2")).status_code == 201

    async def exhausted():  # noqa: ANN202
        return (await world.client_view(v["id"]))["status"] == "exhausted"

    await eventually(exhausted)
    view = await world.client_view(v["id"])
    assert (view["usage"]["units_used"], view["usage"]["units_left"]) == ("5.00", "0.00")
    [event] = await world.outbox("voucher.exhausted.v1")
    assert event["data"]["voucher_id"] == v["id"] and event["data"]["units_used"] == "5.00"
    r = await world.vou.post(f"/vouchers/{v['id']}/provider", json={"provider_id": Q}, headers=DM)
    assert reason(r) == (422, "voucher_not_active")


# ------------------------------------------------------------------ switching provider
async def test_after_a_switch_the_old_provider_charges_only_what_it_delivered_before(world):  # noqa: ANN001
    v = await world.issue()
    await world.choose(v["id"], P)
    assert (await world.charge(P, v["id"], "2026-06-12", "4")).status_code == 201
    world.clock.at = datetime(2026, 6, 20, 10, tzinfo=timezone.utc)
    await world.choose(v["id"], Q)  # the switch: from 20 June on, Q's
    [chosen, switched] = sorted(await world.outbox("voucher.provider_chosen.v1"), key=lambda e: e["time"])
    assert (switched["data"]["effective_from"], switched["data"]["previous_provider_id"]) == ("2026-06-20", P)
    world.clock.at = datetime(2026, 6, 25, 10, tzinfo=timezone.utc)

    # Q's first charge waits until payments has heard of the switch
    assert (await world.charge(Q, v["id"], "2026-06-21", "2")).status_code == 201
    late = await world.charge(P, v["id"], "2026-06-21", "1", wait=False)
    assert reason(late) == (422, "provider_switched") and late.json()["error"]["details"]["switched_on"] == "2026-06-20"
    assert reason(await world.charge(P, v["id"], "2026-06-20", "1", wait=False)) == (422, "provider_switched")
    # delivered before the switch: still P's to charge, from the same units of the voucher
    assert (await world.charge(P, v["id"], "2026-06-19", "1", wait=False)).status_code == 201
    assert reason(await world.charge(Q, v["id"], "2026-06-18", "1", wait=False)) == (422, "provider_switched")
    # the units are the voucher's: 10 - 4 - 2 - 1 = 3 left, whoever charges
    assert reason(await world.charge(Q, v["id"], "2026-06-22", "3.5", wait=False)) == (422, "units_exceeded")
    assert (await world.charge(Q, v["id"], "2026-06-22", "3", wait=False)).status_code == 201
    usage = (await world.usage_after_charges(v["id"], 4))["usage"]
    assert (usage["units_used"], usage["units_left"]) == ("10.00", "0.00")


# ------------------------------------------------------------------ expiry
async def test_the_expiry_job_expires_once_and_an_expired_voucher_is_charged_inside_its_validity(world):  # noqa: ANN001
    short = await world.issue(valid_until="2026-06-30")
    long = await world.issue()
    await world.choose(short["id"], P)
    assert (await world.charge(P, short["id"], "2026-06-14", "1")).status_code == 201
    r = await world.vou.post("/jobs/expire", headers=OPERATOR)
    assert r.json() == {"expired": 0, "voucher_ids": []}, "nothing has passed yet"

    world.clock.at = datetime(2026, 7, 2, 3, tzinfo=timezone.utc)
    r = await world.vou.post("/jobs/expire", headers=OPERATOR)
    assert r.status_code == 200 and r.json() == {"expired": 1, "voucher_ids": [short["id"]]}
    assert (await world.vou.post("/jobs/expire", headers=OPERATOR)).json()["expired"] == 0, "a second run: none"
    assert len(await world.outbox("voucher.expired.v1")) == 1
    assert (await world.client_view(short["id"]))["status"] == "expired"
    assert (await world.client_view(long["id"]))["status"] == "issued"
    assert reason(await world.vou.post(f"/vouchers/{short['id']}/provider", json={"provider_id": Q},
                                       headers=DM)) == (422, "voucher_expired")
    assert (await world.vou.post("/jobs/expire", headers=DM)).status_code == 403

    # payments: services inside the validity stay chargeable after expiry; after it, not
    assert (await world.charge(P, short["id"], "2026-06-29", "2", wait=False)).status_code == 201
    assert reason(await world.charge(P, short["id"], "2026-07-01", "1", wait=False)) == (
        422, "service_date_outside_validity")

    # the command line runs the same job on the service's database, by the system's clock: a voucher
    # issued 20 days ago (by the test's clock) that ended yesterday
    real_today = datetime.now(timezone.utc).date()
    world.clock.at = datetime.now(timezone.utc) - timedelta(days=20)
    ended = await world.issue(valid_from=world.clock.today().isoformat(),
                              valid_until=(real_today - timedelta(days=1)).isoformat())
    env = {**os.environ, "DATABASE_URL": world.database_url, "ENVIRONMENT": "test", "LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-m", "vouchers", "expire"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and " expired" in out.stdout, out.stdout + out.stderr
    async with world.vou_app.state.runtime.sessions() as s:
        assert (await s.get(Voucher, ended["id"])).status == "expired"


# ------------------------------------------------------------------ revocation
async def test_a_revoked_voucher_is_charged_for_services_before_it_for_30_days(world):  # noqa: ANN001
    v = await world.issue()
    await world.choose(v["id"], P)
    assert (await world.charge(P, v["id"], "2026-06-01", "1")).status_code == 201
    revoked = VoucherRevoked(voucher_id=v["id"], funder_id=F1, decision_ref=v["decision_ref"], decision_version=2,
                             category="home_care", effective_from=date(2026, 6, 15), revoked_at=START)
    await world.feed(world.pay_app, pay_handlers.on_voucher_revoked, revoked)

    world.clock.at = datetime(2026, 6, 20, tzinfo=timezone.utc)
    assert (await world.charge(P, v["id"], "2026-06-10", "1", wait=False)).status_code == 201
    after = await world.charge(P, v["id"], "2026-06-15", "1", wait=False)
    assert reason(after) == (422, "service_after_revocation")
    world.clock.at = datetime(2026, 7, 15, 23, tzinfo=timezone.utc)  # the 30th day after
    assert (await world.charge(P, v["id"], "2026-06-11", "1", wait=False)).status_code == 201
    world.clock.at = datetime(2026, 7, 16, 0, 1, tzinfo=timezone.utc)  # the 31st
    late = await world.charge(P, v["id"], "2026-06-12", "1", wait=False)
    assert reason(late) == (422, "revoked_grace_passed") and late.json()["error"]["details"]["grace_until"] == (
        "2026-07-15")


# ------------------------------------------------------------------ the client's comparison
async def test_the_client_compares_providers_by_own_share(world):  # noqa: ANN001
    for provider, name in ((P, "Pirkon Hoiva Oy"), (Q, "Kotihoiva Oy"), (R, "Halpa Oy"), (S, "Aamu Oy")):
        await world.feed(world.vou_app, vou_handlers.HANDLERS[ProviderRegistered.event_type()], ProviderRegistered(
            provider_id=provider, business_id="2617416-4", name=name, registered_at=START))
    for provider in (R, S):
        await world.feed(world.vou_app, vou_handlers.on_provider_approved, ProviderApproved(
            approval_id=f"a-{provider}", provider_id=provider, funder_id=F1, category="home_care",
            approved_at=START - timedelta(days=10)))
    await world.feed(world.vou_app, vou_handlers.on_provider_suspended, ProviderSuspended(
        approval_id=f"a-{R}", provider_id=R, funder_id=F1, category="home_care", reason="insurance_lapsed",
        effective_from=date(2026, 6, 1), suspended_at=START - timedelta(days=1)))
    on_price = vou_handlers.HANDLERS[PriceListPublished.event_type()]
    for provider, cents, since in ((P, 3000, "2026-01-01"), (Q, 3500, "2026-01-01"), (Q, 2000, "2026-06-01"),
                                   (Q, 4000, "2026-08-01"), (R, 1000, "2026-01-01")):
        await world.feed(world.vou_app, on_price, PriceListPublished(
            price_list_id=f"pl-{provider}-{cents}", provider_id=provider, funder_id=F1, category="home_care",
            unit="hour", unit_price_cents=cents, effective_from=date.fromisoformat(since), published_at=START))
    # another category's list changes nothing here
    await world.feed(world.vou_app, on_price, PriceListPublished(
        price_list_id="pl-other", provider_id=P, funder_id=F1, category="cleaning", unit="hour",
        unit_price_cents=100, effective_from=date(2026, 1, 1), published_at=START))

    v = await world.issue(units_per_period="10", value_per_unit_cents=2500)
    client = bearer("client", voucher_id=v["id"])
    r = await world.vou.get(f"/vouchers/{v['id']}/providers", headers=client)
    assert r.status_code == 200, r.text
    page = r.json()
    rows = [(o["provider_id"], o["name"], o["unit_price_cents"], o["own_share_per_unit_cents"],
             o["own_share_per_month_cents"]) for o in page["items"]]
    assert rows == [(Q, "Kotihoiva Oy", 2000, 0, 0),  # below the value: no own share
                    (P, "Pirkon Hoiva Oy", 3000, 500, 5000),  # 5.00 EUR/h × 10 h a month
                    (S, "Aamu Oy", None, None, None)], "suspended R is not offered; S has no price: last"
    assert page["next_cursor"] is None and page["value_per_unit_cents"] == 2500

    first = (await world.vou.get(f"/vouchers/{v['id']}/providers?limit=1", headers=client)).json()
    second = (await world.vou.get(f"/vouchers/{v['id']}/providers?limit=1&cursor={first['next_cursor']}",
                                  headers=client)).json()
    assert [first["items"][0]["provider_id"], second["items"][0]["provider_id"]] == [Q, P]
    # funder staff see it too; another funder's staff and another voucher's client do not
    assert (await world.vou.get(f"/vouchers/{v['id']}/providers", headers=DM)).status_code == 200
    other = bearer("funder_decision_maker", funder_id="092")
    assert (await world.vou.get(f"/vouchers/{v['id']}/providers", headers=other)).status_code == 404
    assert (await world.vou.get(f"/vouchers/{v['id']}/providers",
                                headers=bearer("client", voucher_id="nope"))).status_code == 404
    bad = await world.vou.get(f"/vouchers/{v['id']}/providers?cursor=bm90LWEtY3Vyc29y", headers=client)
    assert reason(bad) == (400, "invalid_cursor")

    # on 1 August Q's new price takes effect: 15.00 EUR/h own share, and it moves after P
    world.clock.at = datetime(2026, 8, 1, 8, tzinfo=timezone.utc)
    later = (await world.vou.get(f"/vouchers/{v['id']}/providers", headers=client)).json()
    assert [(o["provider_id"], o["own_share_per_unit_cents"]) for o in later["items"]] == [
        (P, 500), (Q, 1500), (S, None)]


# ------------------------------------------------------------------ cancellations
async def test_a_cancelled_charge_gives_its_units_back_in_the_clients_view(world):  # noqa: ANN001
    v = await world.issue()
    await world.choose(v["id"], P)
    r = await world.charge(P, v["id"], "2026-06-10", "4")
    assert r.status_code == 201
    assert (await world.usage_after_charges(v["id"], 1))["usage"]["units_used"] == "4.00"
    cancelled = await world.pay.post(f"/charges/{r.json()['id']}/cancel",
                                     headers=bearer("provider_charger", provider_id=P))
    assert cancelled.status_code == 200, cancelled.text

    async def given_back():  # noqa: ANN202
        usage = (await world.client_view(v["id"]))["usage"]
        return usage if usage["units_used"] == "0.00" else None

    usage = await eventually(given_back)
    assert (usage["units_left"], usage["value_used_cents"]) == ("10.00", 0)


async def test_a_corrected_charge_gives_back_what_the_correction_removes_whatever_the_order(world):  # noqa: ANN001
    from seteli_shared.events import ChargeCorrected
    v = await world.issue()
    await world.choose(v["id"], P)
    r = await world.charge(P, v["id"], "2026-06-10", "4")
    assert r.status_code == 201
    assert (await world.usage_after_charges(v["id"], 1))["usage"]["units_used"] == "4.00"
    charge = r.json()

    def corrected(after: str, amount_after: int) -> ChargeCorrected:
        return ChargeCorrected(
            correction_id=new_id(), charge_id=charge["id"], voucher_id=v["id"], funder_id=F1, provider_id=P,
            category="home_care", service_date=date(2026, 6, 10), kind="partial", reason="fewer hours delivered",
            units=Decimal("4") - Decimal(after), amount_cents=10000 - amount_after, own_share_cents=0, fee_cents=0,
            net_cents=0, units_after=Decimal(after), amount_cents_after=amount_after, own_share_cents_after=0,
            settlement_id="s-1", corrected_at=START)

    # 4 h -> 3 h, then (arriving late) a first correction 4 h -> 3.5 h: the smaller figures stand
    await world.feed_run(world.vou_app, charges_corrected, [corrected("3", 7500)])
    await world.feed_run(world.vou_app, charges_corrected, [corrected("3.5", 8750)])
    usage = (await world.client_view(v["id"]))["usage"]
    assert (usage["units_used"], usage["units_left"], usage["value_used_cents"]) == ("3.00", "7.00", 7500)
