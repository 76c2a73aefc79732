"""An integrator's test, written from docs/ alone: a municipal case system and a provider's billing system
connect with broker users made under a prefix (``BROKER_USER_PREFIX``, as on a broker shared by several
systems), using only the published contract (docs/asyncapi.yaml, docs/outside-systems.md), the documented
commands (``seteli-broker``, ``seteli-token``), the HTTP APIs and the sample client (clients/seteli-client).
Nothing of the platform's own code is imported here: the four services run as processes (``system``).

Every reply and notice it receives is validated against its schema in docs/asyncapi.yaml."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import pytest

from seteli_client import CaseSystem, ProviderSystem, Refused, decision_envelope, message_id
from seteli_client.contract import Contract

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ,
    reason="needs the local broker's rabbitmqctl (seteli-broker makes the outside systems' users)")]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONTRACT = Contract.load(ROOT / "docs" / "asyncapi.yaml")
FUNDER = "091"


def tool(*args: str, env: dict | None = None) -> str:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def bearer(role: str, *claims: str) -> dict:
    return {"Authorization": f"Bearer {tool('seteli-token', '--role', role, *claims)}"}


def grant(ref: str, version: int = 1, **terms) -> dict:  # noqa: ANN003
    today = date.today()
    return {"decision_ref": ref, "decision_version": version, "action": "grant", "client_ref": "asiakas-int1",
            "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
            "valid_from": today.isoformat(), "valid_until": today.replace(year=today.year + 1).isoformat(), **terms}


@pytest.fixture
async def outside(system, amqp_url):  # noqa: ANN001
    """The funder's and the provider's broker users, made by the operator's seteli-broker under this system's
    namespace and prefix, as the docs say; removed with seteli-broker afterwards."""
    names = {"BUS_NAMESPACE": system.namespace, "BROKER_USER_PREFIX": system.broker_user_prefix}
    operator = system.client("registry", headers=bearer("operator"))
    approver = bearer("funder_provider_approver", "--funder", FUNDER)
    assert (await operator.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                                  "kind": "municipality"})).status_code in (201, 409)
    assert (await operator.post(f"/funders/{FUNDER}/rulebooks", headers=approver, json={
        "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})).status_code < 300
    provider = (await operator.post("/providers", json={"business_id": "2617416-4", "name": "Integraatio Oy",
                                                        "iban": "FI2112345600000785"})).json()["id"]
    assert (await operator.post(f"/providers/{provider}/approvals", json={"category": "home_care"},
                                headers=approver)).status_code == 201
    u = urlparse(amqp_url)
    users = {}
    for kind, ident in (("funder-system", FUNDER), ("provider-system", provider)):
        out = await asyncio.to_thread(tool, "seteli-broker", f"add-{kind}", ident, "--password", "pw-int", env=names)
        user = out.split()[1]
        assert out.startswith("user ") and user.startswith(system.broker_user_prefix), out
        users[kind] = f"amqp://{user}:pw-int@{u.hostname}:{u.port or 5672}/"
    try:
        yield users["funder-system"], users["provider-system"], provider
    finally:
        for kind, ident in (("funder-system", FUNDER), ("provider-system", provider)):
            await asyncio.to_thread(tool, "seteli-broker", f"remove-{kind}", ident, env=names)


async def test_a_case_system_and_a_billing_system_work_from_the_documents_alone(system, outside):  # noqa: ANN001
    funder_url, provider_url, provider = outside
    ns = system.namespace
    ref = f"INT-{message_id()[:8]}"
    async with CaseSystem(funder_url, namespace=ns) as case_system:
        assert case_system.funder_id == FUNDER, "the funder comes from the prefixed user's name"

        async def issued():  # noqa: ANN202  (until vouchers has heard of the funder: unknown_funder)
            reply = await case_system.decide(decision_envelope(FUNDER, grant(ref)), timeout=30)
            CONTRACT.validate(reply.envelope)
            assert reply.accepted or reply.reason == "unknown_funder", reply.envelope
            return reply if reply.accepted else None

        reply = None
        for _ in range(60):
            reply = await issued()
            if reply is not None:
                break
            await asyncio.sleep(0.5)
        assert reply is not None and reply.data["outcome"] == "issued" and reply.data["client_login_code"]
        voucher = reply.data

        again = await case_system.decide(decision_envelope(FUNDER, grant(ref)))
        amended = await case_system.decide(decision_envelope(FUNDER, grant(ref, 2, units_per_period="30")))
        stale = await case_system.decide(decision_envelope(FUNDER, grant(ref, 1, units_per_period="10")))
        other = decision_envelope(FUNDER, grant(f"{ref}-x"))
        other["data"]["funder_id"] = "092"
        mismatch = await case_system.decide(other)
        broken = decision_envelope(FUNDER, grant(f"{ref}-y", diagnosis="x"))
        refused = await case_system.decide(broken)
        for r in (again, amended, stale, mismatch, refused):
            CONTRACT.validate(r.envelope)
        assert (again.data["outcome"], again.data["client_login_code"]) == ("repeated", None)
        assert amended.data["outcome"] == "amended"
        assert [r.reason for r in (stale, mismatch, refused)] == ["stale_version", "funder_mismatch",
                                                                  "contract_violation"]
        assert refused.data["fields"] == ["data.diagnosis"]
        assert case_system.unclaimed == []

        case_system.funder_id = "092"  # another funder's routing key: the broker refuses it, loudly
        with pytest.raises(Refused):
            await case_system.publish(decision_envelope("092", grant(f"{ref}-z")))

    # the client logs in with the decision letter's codes and chooses the provider; the provider charges
    login = await system.client("vouchers").post("/client-sessions", json={
        "voucher_code": voucher["voucher_code"], "client_login_code": voucher["client_login_code"]})
    assert login.status_code == 200, login.text
    client = system.client("vouchers", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    payments = system.client("payments", headers=bearer("provider_charger", "--provider", provider))
    charge = {"voucher_id": voucher["voucher_id"], "provider_reference": "int-1",
              "service_date": date.today().isoformat(), "units": "4"}
    for _ in range(120):
        chose = await client.post(f"/vouchers/{voucher['voucher_id']}/provider", json={"provider_id": provider})
        charged = await payments.post("/charges", json=charge) if chose.status_code == 200 else None
        if charged is not None and charged.status_code == 201:
            break
        await asyncio.sleep(0.25)
    assert charged is not None and charged.status_code == 201, charged.text if charged is not None else chose.text
    settled = await system.client("payments").post("/settlements/run", headers=bearer("operator"))
    assert settled.status_code == 200, settled.text

    # the provider's system reads its settlement notice from its own queue as its prefixed user
    async with ProviderSystem(provider_url, provider, ns) as billing:
        notice = await asyncio.wait_for(anext(billing.notices()), 60)
    CONTRACT.validate(notice)
    assert notice["type"] == "fi.seteli.notice.settlement.v1"
    assert (notice["data"]["provider_id"], notice["data"]["gross_cents"], notice["data"]["net_cents"]) == (
        provider, 10000, 9500)
