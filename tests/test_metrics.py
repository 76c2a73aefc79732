"""``/metrics`` of every service, scraped from the four services running as processes of their own on the real
PostgreSQL and RabbitMQ: after a charge, a refused charge, a redelivered event and a poison message, the
counters have moved by exactly that, the scrape-time gauges are there, and no label holds an id, a code or a
reference of what was done."""
from __future__ import annotations

import re
import time
from datetime import date, timedelta

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seteli_shared.auth import mint
from seteli_shared.manifest import NAMES as SERVICES
from seteli_shared.testing import eventually

from .test_monitoring import metric_names_used

pytestmark = pytest.mark.e2e
FUNDER = "091"
CONSUMERS = ("vouchers", "payments", "reporting")  # the services with a queue of domain events


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f'metrics:{role}', [role], **claims)}"}


OPERATOR = bearer("operator")
APPROVER = bearer("funder_provider_approver", funder_id=FUNDER)
DECISION_MAKER = bearer("funder_decision_maker", funder_id=FUNDER)

Samples = dict[tuple[str, frozenset], float]


async def scrape(system, service: str) -> Samples:  # noqa: ANN001
    async with system.client(service) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def named(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_counters_move_and_labels_hold_no_ids(system, amqp_url):  # noqa: ANN001
    ns = system.namespace
    registry = system.client("registry", headers=OPERATOR)
    vouchers = system.client("vouchers", headers=DECISION_MAKER)
    payments = system.client("payments")
    today = date.today()
    # every event the services publish, to send one again (a redelivery) below
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel()
    events = await channel.declare_exchange(f"{ns}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    spy = await channel.declare_queue(f"{ns}.metrics-spy", durable=True, arguments={"x-queue-type": "quorum"})
    await spy.bind(events, "#")
    try:
        # the way to a charge: funder, provider, approval, voucher, the client's choice
        r = await registry.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                                  "kind": "municipality"})
        assert r.status_code == 201, r.text
        r = await registry.post("/providers", json={"business_id": "2617416-4", "name": "Kotihoiva Oy",
                                                    "iban": "FI2112345600000785"})
        provider_id = r.json()["id"]
        r = await registry.post(f"/funders/{FUNDER}/rulebooks", headers=APPROVER, json={
            "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
        assert r.status_code == 201, r.text
        r = await registry.post(f"/providers/{provider_id}/approvals", json={"category": "home_care"},
                                headers=APPROVER)
        assert r.status_code == 201, r.text
        decision = {"funder_id": FUNDER, "decision_ref": "HKI-M-1", "client_ref": "asiakas-m1",
                    "category": "home_care", "units_per_period": "20", "period": "month",
                    "value_per_unit_cents": 2500, "valid_from": (today - timedelta(days=60)).isoformat(),
                    "valid_until": (today + timedelta(days=300)).isoformat()}

        async def issued():  # noqa: ANN202
            r = await vouchers.post("/vouchers", json=decision)
            return r if r.status_code == 201 else None

        voucher = (await eventually(issued)).json()
        login = await system.client("vouchers").post("/client-sessions", json={
            "voucher_code": voucher["voucher_code"], "client_login_code": voucher["client_login_code"]})
        client = system.client("vouchers", headers={"Authorization": f"Bearer {login.json()['access_token']}"})

        async def chosen():  # noqa: ANN202
            r = await client.post(f"/vouchers/{voucher['id']}/provider", json={"provider_id": provider_id})
            return r.status_code == 200

        await eventually(chosen)
        payments.headers.update(bearer("provider_charger", provider_id=provider_id))
        charge = {"voucher_id": voucher["id"], "provider_reference": "visit-m-0001",
                  "service_date": (today - timedelta(days=1)).isoformat(), "units": "4", "unit_price_cents": 2500}

        before = {s: await scrape(system, s) for s in SERVICES}

        # a charge accepted (tried until payments has learnt the voucher and the choice from the bus: those
        # tries are refused), one refused for its units (more than the voucher has left), a retry of the first
        async def accepted():  # noqa: ANN202
            r = await payments.post("/charges", json=charge)
            return r if r.status_code == 201 else None

        r = await eventually(accepted)
        charge_id = r.json()["id"]
        refused = await payments.post("/charges", json={**charge, "provider_reference": "visit-m-0002",
                                                          "units": "16.5"})
        assert (refused.status_code, refused.json()["error"]["reason"]) == (422, "units_exceeded")
        assert (await payments.post("/charges", json=charge)).status_code == 200

        # an event payments has handled, delivered again (the same message id): the inbox drops it
        seen = None
        async with spy.iterator(timeout=5) as messages:
            async for m in messages:
                await m.ack()
                if m.routing_key == "voucher.issued.v1":
                    seen = m
                    break
        assert seen is not None
        await channel.default_exchange.publish(aio_pika.Message(
            seen.body, message_id=seen.message_id, type=seen.type, content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=f"{ns}.payments")
        # a poison message on each consuming service's queue: not JSON, dead-lettered with its reason
        for service in CONSUMERS:
            await channel.default_exchange.publish(aio_pika.Message(
                b"not json {", message_id=f"poison-{service}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=f"{ns}.{service}")

        async def dead_lettered():  # noqa: ANN202
            after = {s: await scrape(system, s) for s in CONSUMERS}
            ok = all(value(after[s], "seteli_messages_dead_lettered_total", queue=f"{ns}.{s}", reason="bad_envelope")
                     - value(before[s], "seteli_messages_dead_lettered_total", queue=f"{ns}.{s}",
                             reason="bad_envelope") == 1 for s in CONSUMERS)
            ok = ok and value(after["payments"], "seteli_inbox_duplicates_dropped_total", queue=f"{ns}.payments") \
                - value(before["payments"], "seteli_inbox_duplicates_dropped_total", queue=f"{ns}.payments") == 1
            return after if ok else None

        await eventually(dead_lettered, timeout=30)
        after = {s: await scrape(system, s) for s in SERVICES}
    finally:
        await spy.delete(if_unused=False, if_empty=False)
        await connection.close()

    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    # the charges, by outcome and reason
    assert moved("payments", "seteli_charges_total", outcome="accepted", reason="") == 1
    assert moved("payments", "seteli_charges_total", outcome="repeated", reason="") == 1
    assert moved("payments", "seteli_charges_total", outcome="refused", reason="units_exceeded") == 1
    # HTTP by route template and status: one 201, one 200 (the retry), the refusals 422 (and the early tries')
    for status in ("201", "200"):
        assert moved("payments", "seteli_http_requests_total", method="POST", route="/charges", status=status) == 1
    assert moved("payments", "seteli_http_requests_total", method="POST", route="/charges", status="422") >= 1
    assert moved("payments", "seteli_http_request_duration_seconds_count", method="POST", route="/charges",
                 status="2xx") == 2
    # the consumers: the poison messages dead-lettered and waiting on the dead-letter queues, the charge's
    # events processed by vouchers and reporting, the time their batches took
    for s in CONSUMERS:
        queue = f"{ns}.{s}"
        assert value(after[s], "seteli_dead_letter_queue_messages", queue=queue) >= 1
        assert value(after[s], "seteli_consumer_messages_total", queue=queue, outcome="processed") > 0
        assert value(after[s], "seteli_consumer_batch_duration_seconds_count", queue=queue) > 0
        assert (("seteli_queue_messages_ready", frozenset({("queue", queue)})) in after[s])
        assert value(after[s], "seteli_queue_consumers", queue=queue) >= 1
    # the scrape-time figures: every source answered, the outbox and the jobs are there
    for s in SERVICES:
        assert set(named(after[s], "seteli_metrics_source_up").values()) == {1.0}, (s, after[s])
        assert ("seteli_outbox_depth", frozenset()) in after[s]
        assert ("seteli_outbox_oldest_age_seconds", frozenset()) in after[s]
    assert value(after["payments"], "seteli_unpaid_charges") == 1
    assert value(after["payments"], "seteli_unpaid_charges_cents") == 10000
    # 100.00 gross is 95.00 net at the operator's 5 %: over the EUR 40 minimum, nothing waits under it
    assert value(after["payments"], "seteli_payouts_below_minimum_cents") == 0
    assert 0 < value(after["payments"], "seteli_unpaid_charge_oldest_age_seconds") < 600
    assert value(after["payments"], "seteli_payment_guarantee_seconds") == 14 * 86400
    assert named(after["payments"], "seteli_notices_parked")
    assert named(after["payments"], "seteli_job_interval_seconds"), "payments' scheduled jobs"
    # reporting: the latest event it folded is the charge's (its own time: now, give or take)
    assert 0 <= time.time() - value(after["reporting"], "seteli_reporting_latest_event_timestamp_seconds") < 600

    # no label anywhere holds an id, a code or a reference of what was done
    secrets = {provider_id, voucher["id"], voucher["voucher_code"], voucher["client_login_code"], charge_id,
               "visit-m-0001", "visit-m-0002", "asiakas-m1", "HKI-M-1", seen.message_id}
    for s, samples in after.items():
        for name, labels in samples:
            for key, label in labels:
                assert not any(x in label for x in secrets), (s, name, key, label)
                if key == "route":
                    assert label == "(unmatched)" or label.startswith("/"), label
                    assert not re.search(r"/[0-9a-f]{16,}|/[A-Z0-9]{8,}", label), label
    # and the counters are the service's own: payments' registry does not count the vouchers' routes
    assert not any(dict(labels).get("route") == "/vouchers" for labels in named(after["payments"],
                                                                                 "seteli_http_requests_total"))


async def test_rules_and_dashboards_name_only_exposed_metrics(system):  # noqa: ANN001
    """Every metric name deploy/monitoring's rules and dashboards use is one a running service exposes (its
    families are there before their first event: a counter with labels shows its HELP and TYPE lines)."""
    exposed: set[str] = set()
    for service in SERVICES:
        async with system.client(service) as c:
            text = (await c.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                        "summary": ("_count", "_sum")}.get(family.type, ("",))
            exposed |= {family.name + s for s in suffixes} | {s.name for s in family.samples}
    assert "seteli_job_runs_total" in exposed and "seteli_charges_total" in exposed
    unknown = {where: names - exposed for where, names in metric_names_used().items() if names - exposed}
    assert not unknown, unknown
