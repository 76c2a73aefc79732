"""Rotating a webhook's secret without losing a delivery, on PostgreSQL and the real RabbitMQ with a receiver
on this machine: after a rotation each delivery carries a signature for the new secret and one for the old
(`t=...,v1=<new>,v1=<old>`), so a receiver holding only the old secret and one holding only the new both
accept it; after the grace (`WEBHOOK_SECRET_GRACE_HOURS`) only the new one signs. The signing and the sample
client's verification agree, and the two-secret test vector of docs/webhooks.md holds."""
from __future__ import annotations

import datetime as dt
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from seteli_client import webhooks as client_webhooks

from payments.models import Webhook
from payments.notices import notices
from seteli_shared.auth import mint
from seteli_shared.db import unit_of_work
from seteli_shared.ids import new_id
from seteli_shared.testing import eventually

DOCS = Path(__file__).parents[4] / "docs" / "webhooks.md"
FAST_DEV = {"webhook_poll_seconds": 0.05, "webhook_retry_base_seconds": 0.05, "webhook_allow_http": True,
            "webhook_allow_loopback": True, "webhook_secret_grace_hours": 24}


def manager(provider_id: str) -> dict:
    return {"Authorization": f"Bearer {mint('t:manager', ['provider_manager'], provider_id=provider_id)}"}


class Receiver:
    """A provider's webhook receiver: notes each POST's signature header and body, answers 204."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((self.headers[notices.SIGNATURE_HEADER], body))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/seteli/notices"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def next(self, count: int) -> tuple[str, bytes]:
        await eventually(lambda: len(self.received) >= count, timeout=15)
        return self.received[count - 1]


@pytest.fixture
def receiver():  # noqa: ANN201
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def notice_for(w, provider_id: str) -> None:  # noqa: ANN001
    notice = notices.SettlementNotice(
        settlement_id=new_id(), run_id=new_id(), provider_id=provider_id, funder_id="091", charge_count=1,
        gross_cents=10000, fee_cents=500, net_cents=9500, fee_rate=Decimal("0.05"), reference="RF18539007547034",
        payout_reason="manual", created_at=w.clock.now(), statement_path="/settlements/x/statement")
    async with unit_of_work(w.app.state.runtime.sessions) as session:
        await notices.send_notice(session, notice, dt.datetime.now(dt.timezone.utc))


def accepts(secret: str, header: str, body: bytes) -> bool:
    """A receiver holding only ``secret``: the sample client's check and the platform's own agree."""
    ok = client_webhooks.verify(secret, header, body)
    assert ok == notices.verify(secret, header, body)
    return ok


@pytest.mark.parametrize("live_settings", [FAST_DEV])
async def test_both_secrets_sign_during_the_grace_and_only_the_new_one_after(live, receiver) -> None:  # noqa: ANN001
    w, p = live, "prov-rotate"
    r = await w.client.put(f"/providers/{p}/webhook", json={"url": receiver.url}, headers=manager(p))
    assert r.status_code == 200, r.text
    old = r.json()["secret"]
    await notice_for(w, p)
    header, body = await receiver.next(1)
    assert header.count("v1=") == 1 and accepts(old, header, body)

    r = await w.client.post(f"/providers/{p}/webhook/secret", headers=manager(p))
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert dt.datetime.fromisoformat(r.json()["previous_secret_valid_until"]) == w.clock.now() + timedelta(hours=24)

    # during the grace: both signatures, so a receiver that has not changed over yet and one that has both accept
    await notice_for(w, p)
    header, body = await receiver.next(2)
    parts = header.split(",")
    assert parts[0].startswith("t=") and [x[:3] for x in parts[1:]] == ["v1=", "v1="]
    assert parts[1] == client_webhooks.sign(new, int(parts[0][2:]), body).split(",")[1], "the new one first"
    assert accepts(old, header, body) and accepts(new, header, body)
    assert not accepts("whsec_someone_elses", header, body)

    # after the grace the old secret no longer signs
    w.clock.advance(hours=24, seconds=1)
    await notice_for(w, p)
    header, body = await receiver.next(3)
    assert header.count("v1=") == 1
    assert accepts(new, header, body) and not accepts(old, header, body)

    async def dropped() -> bool:  # not only unused: gone, once the delivery's transaction has committed
        async with w.app.state.runtime.sessions() as session:
            hook = await session.get(Webhook, p)
        return (hook.secret, hook.previous_secret, hook.previous_secret_until) == (new, None, None)

    await eventually(dropped, timeout=15)

    # another provider's manager cannot rotate it; a provider with no webhook has nothing to rotate
    assert (await w.client.post(f"/providers/{p}/webhook/secret", headers=manager("prov-other"))).status_code == 404
    r = await w.client.post("/providers/prov-none/webhook/secret", headers=manager("prov-none"))
    assert (r.status_code, r.json()["error"]["reason"]) == (404, "webhook_not_found")


@pytest.mark.parametrize("live_settings", [FAST_DEV])
async def test_setting_the_webhook_anew_replaces_the_secret_at_once(live, receiver) -> None:  # noqa: ANN001
    """PUT is for a secret that leaked: the old one (and a rotation's previous one) stop signing at once."""
    w, p = live, "prov-rotate-put"
    first = (await w.client.put(f"/providers/{p}/webhook", json={"url": receiver.url}, headers=manager(p))).json()
    rotated = (await w.client.post(f"/providers/{p}/webhook/secret", headers=manager(p))).json()
    put = (await w.client.put(f"/providers/{p}/webhook", json={"url": receiver.url}, headers=manager(p))).json()
    await notice_for(w, p)
    header, body = await receiver.next(1)
    assert header.count("v1=") == 1 and accepts(put["secret"], header, body)
    assert not accepts(first["secret"], header, body) and not accepts(rotated["secret"], header, body)


def test_the_documented_two_secret_vector_verifies_with_either_secret() -> None:
    """docs/webhooks.md: the test vector's body and time signed during a rotation."""
    text = DOCS.read_text()
    body = (b'{"specversion":"1.0","id":"7c0d5e1a-9b3f-4e2a-8d6c-1f4a7b9e2c3d","source":"/seteli/payments",'
            b'"type":"fi.seteli.notice.settlement.v1","data":{"net_cents":9500}}')
    header = notices.sign(["whsec_second_secret_do_not_use", "whsec_test_vector_do_not_use"], 1767225600, body)
    assert header in text, header
    for secret in ("whsec_test_vector_do_not_use", "whsec_second_secret_do_not_use"):
        assert client_webhooks.verify(secret, header, body, now=1767225600)
