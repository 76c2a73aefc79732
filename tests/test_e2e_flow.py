"""The first flow end to end: four services as separate processes, real RabbitMQ and PostgreSQL,
driven through their HTTP APIs only. Every fact a service needs from another crosses the bus."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.testing import eventually

pytestmark = pytest.mark.e2e
FUNDER = "091"


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f'e2e:{role}', [role], **claims)}"}


OPERATOR = bearer("operator")
APPROVER = bearer("funder_provider_approver", funder_id=FUNDER)
DECISION_MAKER = bearer("funder_decision_maker", funder_id=FUNDER)
REPORTING = bearer("funder_reporting", funder_id=FUNDER)


async def test_voucher_flow_across_all_four_services(system):  # noqa: ANN001
    registry = system.client("registry", headers=OPERATOR)
    vouchers = system.client("vouchers", headers=DECISION_MAKER)
    payments = system.client("payments")
    reporting = system.client("reporting", headers=REPORTING)
    today = date.today()

    # 1. registry: the funder enters the register; a provider with a valid business ID and IBAN, approved by it
    r = await registry.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                              "kind": "municipality"})
    assert r.status_code == 201, r.text
    r = await registry.post("/providers", json={"business_id": "2617416-4", "name": "Kotihoiva Oy",
                                                "iban": "FI2112345600000785"})
    assert r.status_code == 201, r.text
    provider_id = r.json()["id"]
    bad = await registry.post("/providers", json={"business_id": "2617416-5", "name": "X", "iban": "FI2112345600000785"})
    assert (bad.status_code, bad.json()["error"]["reason"]) == (422, "invalid_request")
    assert [(e["loc"], e["reason"]) for e in bad.json()["error"]["details"]["errors"]] == [
        (["body", "business_id"], "invalid_business_id")]
    r = await registry.post(f"/funders/{FUNDER}/rulebooks", headers=APPROVER, json={
        "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
    assert r.status_code == 201, r.text  # the funder uses the category: it approves providers for it
    r = await registry.post(f"/providers/{provider_id}/approvals", json={"category": "home_care"}, headers=APPROVER)
    assert r.status_code == 201, r.text
    other = (await registry.post("/providers", json={"business_id": random_business_id(), "name": "Muu Oy",
                                                     "iban": "FI2112345600000785"})).json()["id"]

    # 2. vouchers: a voucher to a pseudonymous client; the client chooses the approved provider
    decision = {"funder_id": FUNDER, "decision_ref": "HKI-2026-0001", "client_ref": "asiakas-7f3a",
                "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
                "valid_from": (today - timedelta(days=60)).isoformat(),
                "valid_until": (today + timedelta(days=300)).isoformat()}

    async def issued():  # noqa: ANN202  (vouchers learns of the funder from the bus)
        r = await vouchers.post("/vouchers", json=decision)
        assert r.status_code == 201 or r.json()["error"]["reason"] == "unknown_funder", r.text
        return r if r.status_code == 201 else None

    r = await eventually(issued)
    voucher_id = r.json()["id"]
    again = await vouchers.post("/vouchers", json=decision)
    assert (again.status_code, again.json()["id"]) == (200, voucher_id), "the same decision makes one voucher"
    hetu = await vouchers.post("/vouchers", json={**decision, "decision_ref": "HKI-2", "client_ref": "131052-308T"})
    assert (hetu.status_code, hetu.json()["error"]["reason"]) == (422, "personal_identity_code")

    # the client logs in with the voucher code and the login code from the decision letter, and chooses
    login = await system.client("vouchers").post("/client-sessions", json={
        "voucher_code": r.json()["voucher_code"], "client_login_code": r.json()["client_login_code"]})
    assert login.status_code == 200, login.text
    client = system.client("vouchers", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    refused = await client.post(f"/vouchers/{voucher_id}/provider", json={"provider_id": other})
    assert (refused.status_code, refused.json()["error"]["reason"]) == (422, "provider_not_approved")

    async def chosen():  # noqa: ANN202  (vouchers learns of the approval from the bus)
        r = await client.post(f"/vouchers/{voucher_id}/provider", json={"provider_id": provider_id})
        return r.status_code == 200 and r.json()["status"] == "provider_chosen"

    await eventually(chosen)

    # 3. payments: the provider charges 4 h x 25.00 = 100.00 EUR
    payments.headers.update(bearer("provider_charger", provider_id=provider_id))
    charge = {"voucher_id": voucher_id, "provider_reference": "visit-0001",
              "service_date": (today - timedelta(days=1)).isoformat(), "units": "4", "unit_price_cents": 2500}

    async def accepted():  # noqa: ANN202  (payments learns of voucher and choice from the bus)
        r = await payments.post("/charges", json=charge)
        return r if r.status_code == 201 else None

    r = await eventually(accepted)
    body = r.json()
    assert (body["amount_cents"], body["own_share_cents"], body["status"]) == (10000, 0, "accepted")
    retry = await payments.post("/charges", json=charge)
    assert (retry.status_code, retry.json()["id"]) == (200, body["id"]), "a retry with the same reference is safe"
    too_much = await payments.post("/charges", json={**charge, "provider_reference": "visit-0002", "units": "16.5"})
    assert too_much.status_code == 422
    assert too_much.json()["error"] == {**too_much.json()["error"], "reason": "units_exceeded"}
    assert too_much.json()["error"]["details"]["units_left"] == "16.00"
    wrong = await payments.post("/charges", json={**charge, "provider_reference": "x-1"},
                                headers=bearer("provider_charger", provider_id=other))
    assert wrong.json()["error"]["reason"] == "not_chosen_provider"

    # settlement: 100.00 EUR settles as 95.00 net and 5.00 fee
    r = await payments.post("/settlements/run", headers=OPERATOR)
    assert r.status_code == 200
    [settlement] = [s for s in r.json() if s["provider_id"] == provider_id]
    assert (settlement["gross_cents"], settlement["fee_cents"], settlement["net_cents"]) == (10000, 500, 9500)
    assert (await payments.post("/settlements/run", headers=OPERATOR)).json() == [], "nothing is settled twice"
    detail = (await payments.get(f"/settlements/{settlement['id']}")).json()
    listed = (await payments.get("/charges", params={"voucher_id": voucher_id})).json()
    assert [(c["id"], c["status"]) for c in listed["items"]] == [(body["id"], "settled")]
    assert [(c["id"], c["fee_cents"], c["net_cents"]) for c in detail["charges"]] == [(body["id"], 500, 9500)]
    check = (await payments.get("/ledger/check", headers=OPERATOR)).json()
    assert check["ok"], check
    balances = (await payments.get("/ledger/balances", headers=OPERATOR)).json()
    assert balances["operator:fee_revenue"] == -500
    assert balances[f"provider:{provider_id}:payout_due"] == -9500
    assert balances[f"provider:{provider_id}:payable"] == 0
    assert balances[f"funder:{FUNDER}:voucher_spend"] == 10000

    # 4. reporting: the funder's figures, folded from the events only
    async def settled_in_report():  # noqa: ANN202
        f = (await reporting.get(f"/funders/{FUNDER}/figures")).json()
        return f if f["charges_settled"] == 1 else None

    figures = await eventually(settled_in_report)
    assert figures == {
        "funder_id": FUNDER, "providers_approved": 1, "approvals": 1, "vouchers_issued": 1, "clients": 1,
        "provider_choices": 1, "charges_accepted": 1, "units_charged": "4.00", "charged_cents": 10000,
        "own_share_cents": 0, "charges_settled": 1, "settlements": 1, "settled_gross_cents": 10000,
        "fee_cents": 500, "net_cents": 9500,
    }

    # the correlation id of the charge request travelled with its events to the consumers' logs
    cid = "6f1d2c3e-0042-4e2e-9c0a-5e7d1b2a3c4d"
    r = await payments.post("/charges", headers={"X-Correlation-ID": cid},
                            json={**charge, "provider_reference": "visit-0003", "units": "1"})
    assert r.status_code == 201 and r.headers["X-Correlation-ID"] == cid
    await eventually(lambda: f'"correlation_id": "{cid}"' in system.logs["reporting"].read_text())
    # no personal identity code reached any log
    assert "131052-308T" not in system.log_text()

    # concurrent charges never spend more units than the voucher has: 15 h left this month (20 - 4 - 1)
    import asyncio

    async def two_hours(i: int):  # noqa: ANN202
        return await payments.post("/charges", json={**charge, "provider_reference": f"race-{i}", "units": "2"})

    answers = await asyncio.gather(*(two_hours(i) for i in range(8)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 7 + [422], [r.text for r in answers]
    assert [r.json()["error"]["reason"] for r in answers if r.status_code == 422] == ["units_exceeded"]
    # twins of one request (same provider reference) racing: one charge, both answered with it
    twins = await asyncio.gather(*(payments.post("/charges", json={**charge, "provider_reference": "twin",
                                                                   "units": "1"}) for _ in range(2)))
    assert sorted(r.status_code for r in twins) == [200, 201], [r.text for r in twins]
    assert len({r.json()["id"] for r in twins}) == 1
    decision_twins = await asyncio.gather(*(vouchers.post("/vouchers", json={**decision, "decision_ref": "HKI-twin"})
                                            for _ in range(3)))
    assert sorted(r.status_code for r in decision_twins) == [200, 200, 201]
    assert len({r.json()["id"] for r in decision_twins}) == 1, "one voucher for one decision"
    assert (await payments.get("/ledger/check", headers=OPERATOR)).json()["ok"]

    # the audit trail of each service records who did what, over HTTP and over the bus
    def trail_of(entries: list[dict]) -> set[tuple]:
        return {(e["channel"], e["actor"].split(":/")[0] if e["channel"] == "bus" else e["actor"], e["actor_tenant"],
                 e["action"], e["funder_id"]) for e in entries}

    async def audit(service: str) -> set[tuple]:
        r = await system.client(service, headers=OPERATOR).get("/audit", params={"limit": 500})
        assert r.status_code == 200 and r.json()["next_cursor"] is None
        return trail_of(r.json()["items"])

    assert {("http", "e2e:operator", "operator", "provider.register", None),
            ("http", "e2e:funder_provider_approver", f"funder:{FUNDER}", "provider.approve", FUNDER)
            } <= await audit("registry")
    assert {("http", "e2e:funder_decision_maker", f"funder:{FUNDER}", "voucher.issue", FUNDER),
            ("http", f"client:{voucher_id}", f"voucher:{voucher_id}", "voucher.choose_provider", FUNDER),
            ("bus", "guest", "system", "fi.seteli.provider.approved.v1", FUNDER)} <= await audit("vouchers")
    assert {("http", "e2e:provider_charger", f"provider:{provider_id}", "charge.create", FUNDER),
            ("http", "e2e:operator", "operator", "settlement.create", FUNDER),
            ("bus", "guest", "system", "fi.seteli.voucher.issued.v1", FUNDER),
            ("bus", "guest", "system", "fi.seteli.voucher.provider_chosen.v1", FUNDER)} <= await audit("payments")
    assert ("bus", "guest", "system", "fi.seteli.charge.settled.v2", FUNDER) in await audit("reporting")
    # the bus entries say which service published, as the broker vouched (user) and the envelope names it
    vouchers_trail = (await system.client("vouchers", headers=OPERATOR).get("/audit", params={"limit": 500})).json()["items"]
    assert any(e["actor"] == "guest:/seteli/registry" for e in vouchers_trail)
    charge_entries = [e for e in (await system.client("payments", headers=OPERATOR).get("/audit", params={"limit": 500})).json()["items"]
                      if e["action"] == "charge.create"]
    assert cid in {e["correlation_id"] for e in charge_entries}, "the audit entry carries the correlation id"
    # a funder reads its own trail; nothing in any trail is personal data
    own = (await system.client("payments", headers=bearer("funder_finance", funder_id=FUNDER)).get("/audit", params={"limit": 500})).json()["items"]
    assert own and all(e["funder_id"] == FUNDER for e in own)
    assert not (await system.client("payments", headers=bearer("funder_finance", funder_id="092")).get("/audit", params={"limit": 500})).json()["items"]
