"""Settlement runs on PostgreSQL and the real RabbitMQ, the registry beside payments (providers with their
IBANs over the bus), a FixedClock: the hold-back under EUR 40 and its release, the 14-day guarantee
overriding it, the at-risk list, the statement, the pain.001 payment file with RF references and control
sums, a notice on a provider's own queue, a webhook signed, retried and logged, a funder's invoice in JSON
and CSV, and the ledger's invariants after all of it."""
from __future__ import annotations

import csv
import io
import json
import threading
from contextlib import AsyncExitStack
from datetime import date, datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree as ET

import aio_pika
import httpx
import pytest
from stdnum import iso11649

import payments.app
import registry.app
from payments.notices import notices
from payments.settlement.banking_days import calendar
from payments.settings import PaymentsSettings
from registry.settings import RegistrySettings
from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.devtools import random_business_id
from seteli_shared.events import Envelope, Event, VoucherIssued, VoucherProviderChosen
from seteli_shared.testing import eventually, make_settings

IBANS = ["FI2112345600000785", "FI5542345670000081", "FI4950009420028730"]
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


class Hook:
    """A provider's webhook receiver: answers 500 to the first ``fail`` POSTs, then 204."""

    def __init__(self, fail: int):
        self.fail, self.received = fail, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((dict(self.headers), body))
                self.send_response(500 if len(outer.received) <= outer.fail else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/seteli/notices"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class World:
    def __init__(self, registry, payments, bus, clock, channel, namespace):  # noqa: ANN001
        self.registry, self.payments, self.bus, self.clock = registry, payments, bus, clock
        self.channel, self.namespace = channel, namespace
        self.queues: list[str] = []  # further queues a test declares, removed after it

    async def publish(self, event: Event, source: str) -> None:
        env = Envelope.wrap(event, source)
        await self.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)

    async def provider(self, name: str, iban: str) -> str:
        r = await self.registry.post("/providers", json={"business_id": random_business_id(), "name": name,
                                                         "iban": iban})
        assert r.status_code == 201, r.text
        p = r.json()["id"]
        r = await self.registry.post(f"/providers/{p}/approvals", json={"funder_id": "091", "category": "home_care"})
        assert r.status_code == 201, r.text
        return p

    async def charge(self, provider_id: str, n: int, units: str) -> dict:
        voucher_id = f"v-{provider_id[:8]}-{n}"
        await self.publish(VoucherIssued(
            voucher_id=voucher_id, funder_id="091", client_ref=f"asiakas-{n}", decision_ref=f"D-{n}",
            category="home_care", unit="hour", units_per_period=Decimal("100"), period="validity",
            value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
            issued_at=self.clock.now()), "vouchers")
        await self.publish(VoucherProviderChosen(voucher_id=voucher_id, funder_id="091", provider_id=provider_id,
                                                 category="home_care", chosen_at=self.clock.now()), "vouchers")
        body = {"voucher_id": voucher_id, "provider_reference": f"visit-{n}",
                "service_date": self.clock.today().isoformat(), "units": units}

        async def accepted():  # noqa: ANN202
            r = await self.payments.post("/charges", json=body,
                                         headers=bearer("provider_charger", provider_id=provider_id))
            assert r.status_code in (201, 404, 422), r.text
            return r.json() if r.status_code == 201 else None

        return await eventually(accepted)

    async def run(self) -> dict:
        r = await self.payments.post("/settlement-runs")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
async def world(pg, namespace, amqp_url):  # noqa: ANN001
    common = dict(environment="test", amqp_url=amqp_url, bus_namespace=namespace, relay_idle_seconds=0.05)
    clock = FixedClock(datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc))
    async with AsyncExitStack() as stack:
        connection = await aio_pika.connect(amqp_url)
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        spy = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
        await spy.bind(exchange, "#")  # every event routable
        clients = []
        for module, settings in (
            (registry.app, RegistrySettings(database_url=await pg.create("registry"), **common)),
            # the receiver is http on 127.0.0.1: allowed only by the development settings
            (payments.app, PaymentsSettings(database_url=await pg.create("payments"), webhook_poll_seconds=0.05,
                                            webhook_retry_base_seconds=0.05, webhook_allow_http=True,
                                            webhook_allow_loopback=True, **common)),
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
        assert (await clients[0].post("/funders", json={"funder_id": "091", "name": "Helsinki",
                                                        "kind": "municipality"})).status_code == 201
        r = await clients[0].post("/funders/091/rulebooks", json={
            "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
        assert r.status_code == 201, r.text
        world = World(*clients, bus, clock, channel, namespace)
        try:
            yield world
        finally:
            notices_channel = await connection.channel()
            for name in world.queues:
                await notices_channel.queue_delete(name)
            await notices_channel.exchange_delete(f"{namespace}.notices")


async def test_daily_runs_hold_back_release_guarantee_statement_payment_file_notices_invoice(world: World):
    w = world
    big, small, tiny = (await w.provider("Iso Hoiva Oy", IBANS[0]), await w.provider("Pieni Hoiva Oy", IBANS[1]),
                        await w.provider("Hento Hoiva Oy", IBANS[2]))
    # the big provider's own notice queue, as `seteli-broker add-provider-system` makes it
    notices_exchange = await w.channel.declare_exchange(f"{w.namespace}.notices", aio_pika.ExchangeType.TOPIC,
                                                        durable=True)
    queue = await w.channel.declare_queue(f"{w.namespace}.notices.{big}", durable=True,
                                          arguments={"x-queue-type": "quorum"})
    w.queues.append(queue.name)
    await queue.bind(notices_exchange, f"notice.{big}.#")
    # the small provider has no AMQP consumer: a webhook, whose first answer fails
    hook = Hook(fail=1)
    r = await w.payments.put(f"/providers/{small}/webhook", json={"url": hook.url},
                             headers=bearer("provider_manager", provider_id=small))
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    assert (await w.payments.put(f"/providers/{small}/webhook", json={"url": hook.url},
                                 headers=bearer("provider_manager", provider_id=big))).status_code == 404
    # payments knows the providers' accounts from the registry's events
    await w.charge(big, 1, "4")  # 100.00 EUR
    await w.charge(small, 2, "1")  # 25.00 EUR: net 23.75, under 40
    await w.charge(tiny, 3, "1")  # 25.00 EUR

    # 1 June: the big provider is paid, the others wait
    first = await w.run()
    assert [(s["provider_id"], s["net_cents"], s["payout_reason"]) for s in first["settlements"]] == [
        (big, 9500, "minimum_reached")]
    assert sorted((h["provider_id"], h["net_cents"]) for h in first["held_back"]) == sorted(
        [(small, 2375), (tiny, 2375)])
    big_settlement = first["settlements"][0]

    # 2 June: the small provider charges again: 50.00 EUR, net 47.50, over the minimum: released
    w.clock.advance(days=1)
    await w.charge(small, 4, "1")
    second = await w.run()
    assert [(s["provider_id"], s["charge_count"], s["net_cents"], s["payout_reason"])
            for s in second["settlements"]] == [(small, 2, 4750, "minimum_reached")]
    assert [h["provider_id"] for h in second["held_back"]] == [tiny]

    # 12 June: the tiny provider's charge of 1 June has 3 days left: at risk, still held back
    w.clock.advance(days=10)
    risk = (await w.payments.get("/settlements/at-risk")).json()
    assert [(c["provider_id"], c["pay_by"], c["days_left"]) for c in risk] == [(tiny, "2026-06-15", 3)]
    assert (await w.payments.get("/settlements/at-risk", headers=bearer("funder_finance", funder_id="091"))
            ).status_code == 403
    assert [h["provider_id"] for h in (await w.run())["held_back"]] == [tiny]
    # 13 June: the guarantee (paid by 15 June, released two days before) wins over the minimum
    w.clock.advance(days=1)
    third = await w.run()
    assert [(s["provider_id"], s["net_cents"], s["payout_reason"]) for s in third["settlements"]] == [
        (tiny, 2375, "guarantee_due")]
    assert third["held_back"] == [] and (await w.payments.get("/settlements/at-risk")).json() == []

    # the statement: lines, fee, net, VAT-exempt; the provider's and the funder's, no one else's
    for headers in (bearer("provider_manager", provider_id=big), bearer("funder_finance", funder_id="091"), OPERATOR):
        r = await w.payments.get(f"/settlements/{big_settlement['id']}/statement", headers=headers)
        assert r.status_code == 200, r.text
    st = r.json()
    assert (st["gross_cents"], st["fee_cents"], st["net_cents"], st["fee_rate"]) == (10000, 500, 9500, "0.05")
    assert [(x["units"], x["gross_cents"], x["fee_cents"], x["net_cents"]) for x in st["lines"]] == [
        ("4.00", 10000, 500, 9500)]
    assert st["vat"]["vat_exempt"] is True and "34 §" in st["vat"]["basis"] and set(st["vat"]["text"]) >= {"fi", "sv"}
    assert st["payee_name"] == "Iso Hoiva Oy" and iso11649.is_valid(st["reference"])
    for headers in (bearer("provider_manager", provider_id=small), bearer("funder_finance", funder_id="092")):
        assert (await w.payments.get(f"/settlements/{big_settlement['id']}/statement", headers=headers)
                ).status_code == 404

    # the payment files: one credit transfer per settlement, RF references, control sums
    runs = (await w.payments.get("/settlement-runs")).json()["items"]
    assert [r["settlement_count"] for r in runs] == [1, 1, 0, 1]
    r = await w.payments.get(f"/settlement-runs/{second['id']}/payment-file")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml"), r.text
    assert (await w.payments.get(f"/settlement-runs/{second['id']}/payment-file",
                                 headers=bearer("funder_finance", funder_id="091"))).status_code == 403
    for run in runs:
        if run["settlement_count"] == 0:  # a run that pays nothing has no file: pain.001 needs a transfer
            r = await w.payments.get(f"/settlement-runs/{run['id']}/payment-file")
            assert (r.status_code, r.json()["error"]["reason"]) == (409, "nothing_to_pay"), r.text
            continue
        xml = ET.fromstring((await w.payments.get(f"/settlement-runs/{run['id']}/payment-file")).content)
        assert xml.tag == f"{PAIN}Document"
        hdr, inf = xml.find(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr"), xml.find(f"{PAIN}CstmrCdtTrfInitn/{PAIN}PmtInf")
        txs = inf.findall(f"{PAIN}CdtTrfTxInf")
        amounts = [Decimal(t.find(f"{PAIN}Amt/{PAIN}InstdAmt").text) for t in txs]
        assert all(t.find(f"{PAIN}Amt/{PAIN}InstdAmt").get("Ccy") == "EUR" for t in txs)
        assert int(hdr.find(f"{PAIN}NbOfTxs").text) == int(inf.find(f"{PAIN}NbOfTxs").text) == len(txs) \
            == run["settlement_count"]
        assert Decimal(hdr.find(f"{PAIN}CtrlSum").text) == Decimal(inf.find(f"{PAIN}CtrlSum").text) \
            == sum(amounts, Decimal("0.00")) == Decimal(run["net_cents"]) / 100
        assert inf.find(f"{PAIN}PmtMtd").text == "TRF" and inf.find(f"{PAIN}ReqdExctnDt").text == \
            calendar().next_banking_day(date.fromisoformat(run["run_date"])).isoformat()  # 13.6. a Saturday
        for t in txs:
            ref = t.find(f"{PAIN}RmtInf/{PAIN}Strd/{PAIN}CdtrRefInf")
            assert ref.find(f"{PAIN}Tp/{PAIN}CdOrPrtry/{PAIN}Cd").text == "SCOR"
            assert iso11649.is_valid(ref.find(f"{PAIN}Ref").text)
            assert t.find(f"{PAIN}CdtrAcct/{PAIN}Id/{PAIN}IBAN").text in IBANS
    xml = ET.fromstring((await w.payments.get(f"/settlement-runs/{first['id']}/payment-file")).content)
    tx = xml.find(f"{PAIN}CstmrCdtTrfInitn/{PAIN}PmtInf/{PAIN}CdtTrfTxInf")
    assert (tx.find(f"{PAIN}Cdtr/{PAIN}Nm").text, tx.find(f"{PAIN}CdtrAcct/{PAIN}Id/{PAIN}IBAN").text,
            tx.find(f"{PAIN}Amt/{PAIN}InstdAmt").text) == ("Iso Hoiva Oy", IBANS[0], "95.00")
    assert tx.find(f"{PAIN}RmtInf/{PAIN}Strd/{PAIN}CdtrRefInf/{PAIN}Ref").text == big_settlement["reference"]

    # the big provider's notice, on its own queue through the outbox
    async def notice():  # noqa: ANN202
        return await queue.get(no_ack=True, fail=False)

    message = await eventually(notice)
    assert message.routing_key == f"notice.{big}.settlement" and message.type == notices.NOTICE_TYPE
    data = json.loads(message.body)["data"]
    assert (data["settlement_id"], data["net_cents"], data["reference"], data["vat_exempt"]) == (
        big_settlement["id"], 9500, big_settlement["reference"], True)

    # the small provider's notice: POSTed, refused once, retried, signed, logged
    async def delivered():  # noqa: ANN202
        r = await w.payments.get(f"/providers/{small}/webhook/deliveries",
                                 headers=bearer("provider_manager", provider_id=small))
        items = r.json()["items"]
        return items if items and items[0]["status"] == "delivered" else None

    deliveries = await eventually(delivered)
    assert len(deliveries) == 1 and deliveries[0]["attempts"] == 2
    assert [(a["attempt"], a["status_code"]) for a in deliveries[0]["log"]] == [(1, 500), (2, 204)]
    assert len(hook.received) == 2
    headers, body = hook.received[-1]
    assert notices.verify(secret, headers[notices.SIGNATURE_HEADER], body)
    assert not notices.verify("whsec_not-the-secret", headers[notices.SIGNATURE_HEADER], body)
    assert json.loads(body)["data"]["provider_id"] == small
    assert (await w.payments.get(f"/providers/{small}/webhook/deliveries",
                                 headers=bearer("provider_manager", provider_id=big))).status_code == 404
    hook.server.shutdown()

    # the funder's invoice for June: JSON and CSV
    finance = bearer("funder_finance", funder_id="091")
    inv = (await w.payments.get("/funders/091/invoices/2026-06", headers=finance)).json()
    assert [(x["category"], x["charge_count"], x["gross_cents"], x["fee_cents"], x["net_cents"])
            for x in inv["lines"]] == [("home_care", 4, 17500, 875, 16625)]
    assert inv["total"]["net_cents"] == 16625 and inv["vat"]["vat_exempt"]
    for kw in ({"params": {"format": "csv"}}, {"headers": {**finance, "accept": "text/csv"}}):
        r = await w.payments.get("/funders/091/invoices/2026-06", **({"headers": finance} | kw))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(x["category"], x["gross_eur"], x["fee_eur"], x["net_eur"]) for x in rows] == [
            ("home_care", "175.00", "8.75", "166.25"), ("total", "175.00", "8.75", "166.25")]
    assert (await w.payments.get("/funders/091/invoices/2026-05", headers=finance)).json()["lines"] == []
    assert (await w.payments.get("/funders/091/invoices/2026-06",
                                 headers=bearer("funder_finance", funder_id="092"))).status_code == 404
    assert (await w.payments.get("/funders/091/invoices/2026-13")).status_code == 422

    # and the ledger holds
    check = (await w.payments.get("/ledger/check")).json()
    assert check["ok"], check
