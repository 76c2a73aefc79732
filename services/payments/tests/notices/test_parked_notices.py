"""Notices nobody can receive yet, on PostgreSQL and the real RabbitMQ: a settlement notice to a provider whose
system has bound no queue is parked after a bounded number of attempts (not retried every few seconds for
ever), logged once, listed for the operator and counted in /health/ready; once the queue is bound (as
``seteli-broker add-provider-system`` binds it) the operator's retry, or the slow periodic one, delivers it
exactly once. A webhook that keeps failing is parked the same way, and delivered by a retry or by the provider
setting its webhook anew."""
from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from payments.notices import notices
from seteli_shared.auth import mint
from seteli_shared.testing import eventually

from .test_webhooks import DEVELOPMENT, Receiver, notice_for, set_hook


def as_(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


async def settled_notice(w, provider_id: str) -> dict:  # noqa: ANN001
    """A charge of 100.00 EUR settled by the daily run: the provider's settlement (and its notice)."""
    [(voucher_id, _)] = await w.provider_with_vouchers(provider_id, 1)
    await w.charge(provider_id, voucher_id, "visit-1", "4")
    r = await w.client.post("/settlement-runs")
    assert r.status_code == 200, r.text
    [settlement] = r.json()["settlements"]
    return settlement


async def parked(w, **params) -> list[dict]:  # noqa: ANN001, ANN003
    r = await w.client.get("/notices/parked", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def parked_count(w) -> int:  # noqa: ANN001
    r = await w.client.get("/health/ready")
    assert r.status_code == 200, r.text
    return r.json()["details"]["parked_notices"]


class ProviderSystem:
    """A provider's system binding its own queue, as ``seteli-broker add-provider-system`` binds it."""

    def __init__(self, w, provider_id: str):  # noqa: ANN001
        self.w, self.provider_id = w, provider_id

    async def __aenter__(self) -> aio_pika.abc.AbstractQueue:
        self.connection = await aio_pika.connect(self.w.bus.settings.amqp_url)
        channel = await self.connection.channel()
        ns = self.w.bus.settings.bus_namespace
        exchange = await channel.declare_exchange(f"{ns}.notices", aio_pika.ExchangeType.TOPIC, durable=True)
        self.queue = await channel.declare_queue(f"{ns}.notices.{self.provider_id}", durable=True,
                                                 arguments={"x-queue-type": "quorum"})
        await self.queue.bind(exchange, f"notice.{self.provider_id}.#")
        return self.queue

    async def __aexit__(self, *exc) -> None:  # noqa: ANN002
        await self.queue.delete(if_unused=False, if_empty=False)
        await self.connection.close()


async def received(queue) -> list[dict]:  # noqa: ANN001
    """Every message waiting in the queue (taken)."""
    out = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        out.append(json.loads(message.body))
    return out


@pytest.mark.parametrize("live_settings", [{"outbox_park_after_attempts": 3, "notice_parked_retry_seconds": 0}])
async def test_a_notice_without_a_queue_is_parked_logged_once_listed_and_delivered_once_the_queue_is_bound(
        live, log_lines):  # noqa: ANN001
    w, p = live, "prov-no-queue"
    settlement = await settled_notice(w, p)

    [item] = await eventually(lambda: parked(w), timeout=30)  # 3 attempts: 0.5 + 1 s of back-off between them
    assert {k: item[k] for k in ("channel", "provider_id", "notice_type", "subject", "attempts", "reason")} == {
        "channel": "queue", "provider_id": p, "notice_type": notices.NOTICE_TYPE, "subject": settlement["id"],
        "attempts": 3, "reason": "no_queue_bound"}
    assert "data" not in item and "body" not in item, "the list names the notice, it does not show it"
    assert await parked_count(w) == 1
    await asyncio.sleep(3)  # parked: not tried again, not logged again
    assert [i["attempts"] for i in await parked(w)] == [3] and await parked(w, provider_id="prov-other") == []
    assert (await w.client.get("/notices/parked", headers=as_("provider_manager", provider_id=p))).status_code == 403

    key = f"notices/notice.{p}.settlement"
    lines = [e for e in map(json.loads, log_lines) if e.get("routing_key") == key]
    assert [(e["event"], e["level"]) for e in lines] == [("outbox.parked", "warning")], "one line, not one a try"

    async with ProviderSystem(w, p) as queue:
        assert await received(queue) == []
        r = await w.client.post("/notices/parked/retry", params={"provider_id": p})
        assert (r.status_code, r.json()) == (200, {"queue": 1, "webhook": 0}), r.text
        [notice] = await eventually(lambda: received(queue))
        assert (notice["type"], notice["data"]["settlement_id"], notice["data"]["net_cents"]) == (
            notices.NOTICE_TYPE, settlement["id"], 9500)
        await asyncio.sleep(1.0)
        assert await received(queue) == [], "delivered exactly once"
    assert await parked(w) == [] and await parked_count(w) == 0
    lines = [e for e in map(json.loads, log_lines) if e.get("routing_key") == key]
    assert [e["event"] for e in lines] == ["outbox.parked", "outbox.parked_delivered"]
    audit = (await w.client.get("/audit")).json()["items"]
    assert [a["resource_id"] for a in audit if a["action"] == "notices.retry_parked"] == [p]


@pytest.mark.parametrize("live_settings", [{"outbox_park_after_attempts": 2, "notice_parked_retry_seconds": 0.5}])
async def test_the_slow_retry_tries_parked_notices_quietly_and_delivers_them_once_the_queue_is_bound(
        live, log_lines):  # noqa: ANN001
    w, p = live, "prov-later-queue"
    settlement = await settled_notice(w, p)
    await eventually(lambda: parked(w), timeout=30)

    async def retried_twice():  # noqa: ANN202
        items = await parked(w)
        return items and items[0]["attempts"] >= 4

    await eventually(retried_twice, timeout=30)  # the periodic retry tried it again, and parked it again
    key = f"notices/notice.{p}.settlement"
    assert [e["event"] for e in map(json.loads, log_lines) if e.get("routing_key") == key] == ["outbox.parked"]

    async with ProviderSystem(w, p) as queue:  # no operator action: the next periodic retry delivers it
        [notice] = await eventually(lambda: received(queue), timeout=15)
        assert notice["data"]["settlement_id"] == settlement["id"]
        await asyncio.sleep(1.5)  # three more periods
        assert await received(queue) == []
    assert await parked(w) == []
    assert [e["event"] for e in map(json.loads, log_lines) if e.get("routing_key") == key] == [
        "outbox.parked", "outbox.parked_delivered"]


@pytest.mark.parametrize("live_settings", [{**DEVELOPMENT, "webhook_max_attempts": 2, "notice_parked_retry_seconds": 0,
                                            "outbox_park_after_attempts": 1000}])
async def test_a_webhook_that_keeps_failing_is_parked_then_delivered_by_a_retry_or_a_new_url(live, log_lines):  # noqa: ANN001
    w, p = live, "prov-hook-down"
    answers = {"status": 500}

    async def answer(receiver: Receiver, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 {answers['status']} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()

    async with Receiver(answer) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/n"
        assert (await set_hook(w, p, url)).status_code == 200
        await notice_for(w, p)
        [item] = await eventually(lambda: parked(w), timeout=15)
        assert (item["channel"], item["provider_id"], item["attempts"], item["reason"]) == ("webhook", p, 2, "http_500")
        assert await parked_count(w) == 1
        await asyncio.sleep(1.0)
        assert len(receiver.requests) == 2, "parked: not posted again"

        answers["status"] = 204  # the receiver is back: the operator's retry delivers it
        r = await w.client.post("/notices/parked/retry")
        assert (r.status_code, r.json()) == (200, {"queue": 0, "webhook": 1})
        await eventually(lambda: len(receiver.requests) == 3)
        await eventually(lambda: _status(w, p, "delivered"))
        assert await parked(w) == [] and await parked_count(w) == 0

        answers["status"] = 503  # a second notice parks; the provider then sets its webhook anew
        await notice_for(w, p)
        await eventually(lambda: parked(w), timeout=15)
        answers["status"] = 204
        assert (await set_hook(w, p, url)).status_code == 200
        await eventually(lambda: _status(w, p, "delivered", "delivered"))
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 6, "each delivered once: 2 failed + 1, 2 failed + 1"
    events = [e["event"] for e in map(json.loads, log_lines) if e.get("provider_id") == p
              and e["event"].startswith("webhook.parked")]
    assert events == ["webhook.parked", "webhook.parked_delivered"] * 2


async def _status(w, provider_id: str, *statuses: str) -> bool:  # noqa: ANN001
    r = await w.client.get(f"/providers/{provider_id}/webhook/deliveries")
    return [d["status"] for d in r.json()["items"]] == list(statuses)


@pytest.mark.parametrize("live_settings", [{"outbox_park_after_attempts": 2, "notice_parked_retry_seconds": 0}])
async def test_one_parked_notice_is_shown_retried_or_discarded_by_the_operator_and_audited(live):  # noqa: ANN001
    w = live
    first = await settled_notice(w, "prov-one")
    [item] = await eventually(lambda: parked(w), timeout=30)
    shown = await w.client.get(f"/notices/parked/{item['id']}")
    assert shown.status_code == 200 and shown.json() == item and "data" not in shown.json()
    assert (await w.client.get(f"/notices/parked/{item['id']}",
                               headers=as_("provider_manager", provider_id="prov-one"))).status_code == 403
    missing = await w.client.get("/notices/parked/no-such-notice")
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "parked_notice_not_found"

    async with ProviderSystem(w, "prov-one") as queue:
        r = await w.client.post(f"/notices/parked/{item['id']}/retry")
        assert r.status_code == 200 and r.json()["action"] == "retried", r.text
        [notice] = await eventually(lambda: received(queue))
        assert notice["data"]["settlement_id"] == first["id"]
    assert await parked(w) == []
    assert (await w.client.post(f"/notices/parked/{item['id']}/retry")).status_code == 404  # delivered: not parked

    # another provider's notice, given up: never sent, even once its queue is bound
    await settled_notice(w, "prov-two")
    [other] = await eventually(lambda: parked(w), timeout=30)
    r = await w.client.post(f"/notices/parked/{other['id']}/discard")
    assert r.status_code == 200 and r.json()["notice"]["provider_id"] == "prov-two", r.text
    assert await parked(w) == [] and await parked_count(w) == 0
    async with ProviderSystem(w, "prov-two") as queue:
        assert (await w.client.post("/notices/parked/retry")).json() == {"queue": 0, "webhook": 0}
        await asyncio.sleep(1.0)
        assert await received(queue) == []
    audit = (await w.client.get("/audit")).json()["items"]
    assert [(a["action"], a["resource_id"]) for a in audit if a["resource_type"] == "notice"] == [
        ("notices.retry_parked_one", item["id"]), ("notices.discard_parked", other["id"])]
