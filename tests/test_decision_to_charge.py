"""A service decision published on the real broker by the sample publisher (as the funder's own case
system) becomes a voucher that the client chooses a provider for and the provider charges: the four
services run as processes on PostgreSQL and RabbitMQ, and only the bus and their APIs connect them."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import pytest

from seteli_shared import broker
from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.testing import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ,
    reason="needs the local broker's rabbitmqctl (to create the funder's case-system user)")]
ROOT = Path(__file__).resolve().parent.parent
FUNDER = "091"


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f'd2c:{role}', [role], **claims)}"}


@pytest.fixture
async def case_system(system, amqp_url):  # noqa: ANN001
    """The funder's case-system broker user and its reply queue; removed afterwards."""
    ns, prefix = system.namespace, system.broker_user_prefix
    admin = await aio_pika.connect(amqp_url)
    ch = await admin.channel()
    await ch.declare_exchange(f"{ns}.decision-replies", aio_pika.ExchangeType.TOPIC, durable=True)
    user = await asyncio.to_thread(broker.add_funder_system, FUNDER, "pw-d2c", ns, "/", prefix)
    u = urlparse(amqp_url)
    try:
        yield f"amqp://{user}:pw-d2c@{u.hostname}:{u.port or 5672}/"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)
        ch = await admin.channel()
        await ch.queue_delete(f"{ns}.decision-replies.{FUNDER}")
        await (await admin.channel()).exchange_delete(f"{ns}.decision-replies")
        await admin.close()


async def publish(url: str, ns: str, ref: str) -> tuple[int, dict | None, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "seteli-publish-decision"), "--amqp-url", url, "--namespace", ns,
        "--decision-ref", ref, "--client-ref", "asiakas-d2c", "--units", "20", "--value-cents", "2500",
        "--timeout", "20", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    reply = json.loads(text[text.index('{\n  "reply"'):])["reply"] if '"reply"' in text else None
    return proc.returncode, reply, text + err.decode()


async def test_a_published_decision_becomes_a_voucher_the_provider_charges(system, case_system):  # noqa: ANN001
    operator = system.client("registry", headers=bearer("operator"))
    approver = bearer("funder_provider_approver", funder_id=FUNDER)
    assert (await operator.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                                  "kind": "municipality"})).status_code in (200, 201)
    r = await operator.post(f"/funders/{FUNDER}/rulebooks", headers=approver, json={
        "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
    assert r.status_code in (200, 201), r.text
    r = await operator.post("/providers", json={"business_id": random_business_id(), "name": "Päätöshoiva Oy",
                                                "iban": "FI2112345600000785"})
    provider = r.json()["id"]
    assert (await operator.post(f"/providers/{provider}/approvals", json={"category": "home_care"},
                                headers=approver)).status_code == 201

    # the case system publishes; until vouchers has heard of the funder the answer is unknown_funder
    ref = f"HKI-{uuid.uuid4().hex[:8]}"

    async def accepted():  # noqa: ANN202
        code, reply, text = await publish(case_system, system.namespace, ref)
        assert code in (0, 2), text
        return reply if code == 0 else None

    reply = (await eventually(accepted, timeout=60, interval=0.5))["data"]
    assert reply["decision_ref"] == ref and reply["client_login_code"]

    # the client logs in with the codes of the decision letter and chooses the provider
    login = await system.client("vouchers").post("/client-sessions", json={
        "voucher_code": reply["voucher_code"], "client_login_code": reply["client_login_code"]})
    assert login.status_code == 200, login.text
    client = system.client("vouchers", headers={"Authorization": f"Bearer {login.json()['access_token']}"})

    async def chosen():  # noqa: ANN202
        r = await client.post(f"/vouchers/{reply['voucher_id']}/provider", json={"provider_id": provider})
        return r.status_code == 200

    await eventually(chosen)

    # the provider charges the voucher by what payments learnt from the bus
    payments = system.client("payments", headers=bearer("provider_charger", provider_id=provider))
    charge = {"voucher_id": reply["voucher_id"], "provider_reference": "d2c-1",
              "service_date": date.today().isoformat(), "units": "3"}

    async def charged():  # noqa: ANN202
        r = await payments.post("/charges", json=charge)
        return r if r.status_code == 201 else None

    r = await eventually(charged)
    assert (r.json()["amount_cents"], r.json()["funder_id"]) == (7500, FUNDER)
