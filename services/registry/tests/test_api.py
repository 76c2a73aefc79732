"""The registry over HTTP, in this process, on its own database (PostgreSQL, and the embedded SQLite)
and a bus namespace of its own on the real RabbitMQ: funders, providers, approvals, lists and the refusals of bad requests."""
from __future__ import annotations

import json

import httpx

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.testing import eventually

IBAN = "FI2112345600000785"
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


def field_reasons(answer: httpx.Response) -> dict[str, str]:
    """``{field: reason}`` of a 422 that refused fields of the request."""
    error = answer.json()["error"]
    assert error["reason"] == "invalid_request", error
    return {str(e["loc"][-1]): e.get("reason") or e.get("type") for e in error["details"]["errors"]}


def funder(funder_id: str = "091", **kw) -> dict:  # noqa: ANN003
    return {"funder_id": funder_id, "name": "Helsingin kaupunki", "kind": "municipality", **kw}


async def rulebook(registry, funder_id: str, category: str, version: str = "2026.1", **kw) -> dict:  # noqa: ANN001, ANN003
    r = await registry.post(f"/funders/{funder_id}/rulebooks", json={
        "category": category, "rulebook_version": version, "title": f"Sääntökirja {category}", **kw})
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_a_funder_is_registered_once_and_announced_on_the_bus(registry, spy):  # noqa: ANN001
    r = await registry.post("/funders", json=funder(operator_fee_rate="0.030", contact_email="Seteli@Hel.fi"))
    assert r.status_code == 201, r.text
    assert r.json() | {"created_at": None} == {
        "funder_id": "091", "name": "Helsingin kaupunki", "kind": "municipality", "operator_fee_rate": "0.03",
        "settlement_days": 14, "contact_email": "seteli@hel.fi", "charge_deadline_days": 90, "created_at": None}
    again = await registry.post("/funders", json=funder(operator_fee_rate="0.03", contact_email="seteli@hel.fi"))
    assert (again.status_code, again.json()) == (200, r.json()), "the same registration again is a retry"
    other = await registry.post("/funders", json=funder(operator_fee_rate="0.04"))
    assert other.status_code == 409
    assert other.json()["error"]["reason"] == "funder_exists"
    assert other.json()["error"]["details"]["funder_id"] == "091"
    assert set(other.json()["error"]["details"]["differing"]) == {"operator_fee_rate", "contact_email"}

    async def announced():  # noqa: ANN202
        message = await spy.get(no_ack=True, fail=False)
        return message and json.loads(message.body)
    event = await eventually(announced)
    assert event["type"] == "fi.seteli.funder.registered.v1" and event["subject"] == "091"
    assert event["data"] | {"registered_at": None} == {
        "funder_id": "091", "name": "Helsingin kaupunki", "kind": "municipality", "operator_fee_rate": "0.03",
        "registered_at": None, "charge_deadline_days": 90}
    assert await spy.get(no_ack=True, fail=False) is None, "the retry announced nothing"


async def test_a_funders_terms_change_on_a_new_contract_and_are_announced(registry, spy):  # noqa: ANN001
    r = await registry.post("/funders", json=funder(charge_deadline_days=60))
    assert (r.status_code, r.json()["charge_deadline_days"]) == (201, 60), r.text

    async def announced():  # noqa: ANN202
        message = await spy.get(no_ack=True, fail=False)
        return message and json.loads(message.body)
    assert (await eventually(announced))["data"]["charge_deadline_days"] == 60
    changed = await registry.patch("/funders/091", json={"charge_deadline_days": 30, "operator_fee_rate": "0.040"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["charge_deadline_days"], changed.json()["operator_fee_rate"],
            changed.json()["settlement_days"]) == (30, "0.04", 14)
    event = await eventually(announced)
    assert event["type"] == "fi.seteli.funder.terms_changed.v1" and event["subject"] == "091"
    assert event["data"] | {"changed_at": None} == {"funder_id": "091", "operator_fee_rate": "0.04",
                                                    "settlement_days": 14, "charge_deadline_days": 30,
                                                    "changed_at": None}
    same = await registry.patch("/funders/091", json={"charge_deadline_days": 30})
    assert (same.status_code, same.json()) == (200, changed.json())
    assert await spy.get(no_ack=True, fail=False) is None, "the same terms again announce nothing"
    assert (await registry.get("/funders/091")).json()["charge_deadline_days"] == 30
    assert field_reasons(await registry.patch("/funders/091", json={"charge_deadline_days": 0})) == {
        "charge_deadline_days": "greater_than_equal"}
    assert (await registry.patch("/funders/999", json={"charge_deadline_days": 30})).status_code == 404
    assert (await registry.patch("/funders/091", json={"charge_deadline_days": 45},
                                 headers=bearer("funder_finance", funder_id="091"))).status_code == 403


async def test_funders_are_read_by_every_party_and_listed_in_pages(registry):  # noqa: ANN001
    for code in ("092", "091", "235", "vantaa-hva"):
        kind = "wellbeing_services_county" if code.startswith("v") else "municipality"
        assert (await registry.post("/funders", json=funder(code, kind=kind))).status_code == 201
    seen, cursor = [], None
    while True:
        r = await registry.get("/funders", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                               headers=bearer("provider_manager", provider_id="p-1"))
        assert r.status_code == 200, r.text
        seen += [f["funder_id"] for f in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["091", "092", "235", "vantaa-hva"]
    counties = (await registry.get("/funders?kind=wellbeing_services_county")).json()["items"]
    assert [f["funder_id"] for f in counties] == ["vantaa-hva"]
    one = await registry.get("/funders/235", headers=bearer("funder_reporting", funder_id="091"))
    assert (one.status_code, one.json()["operator_fee_rate"]) == (200, "0.05")
    assert (await registry.get("/funders/999")).json()["error"]["reason"] == "funder_not_found"
    assert (await registry.get("/funders", headers=bearer("client", voucher_id="v"))).status_code == 403
    assert (await registry.post("/funders", json=funder("093"),
                                headers=bearer("funder_provider_approver", funder_id="093"))).status_code == 403


async def test_a_funders_terms_are_checked_field_by_field_all_at_once(registry):  # noqa: ANN001
    r = await registry.post("/funders", json={"funder_id": "Not Valid", "name": "   ", "kind": "city",
                                              "operator_fee_rate": "1", "settlement_days": 0,
                                              "contact_email": "nobody", "colour": "red"})
    assert r.status_code == 422
    assert field_reasons(r).keys() == {"funder_id", "name", "kind", "operator_fee_rate", "settlement_days",
                                       "contact_email", "colour"}
    assert "nobody" not in r.text and "Not Valid" not in json.dumps(r.json()["error"].get("message"))
    negative = await registry.post("/funders", json=funder(operator_fee_rate=-0.01))
    assert field_reasons(negative) == {"operator_fee_rate": "invalid_fee_rate"}
    signed = await registry.post("/funders", json=funder(operator_fee_rate="-0.01"))  # text: plain digits only
    assert signed.json()["error"]["reason"] == "invalid_number", signed.text
    zero = await registry.post("/funders", json=funder("001", operator_fee_rate="0"))
    assert (zero.status_code, zero.json()["operator_fee_rate"]) == (201, "0")


async def test_an_approval_needs_a_registered_funder(registry):  # noqa: ANN001
    provider = (await registry.post("/providers", json={"business_id": random_business_id(), "name": "Hoiva Oy",
                                                        "iban": IBAN})).json()["id"]
    unknown = await registry.post(f"/providers/{provider}/approvals", json={"funder_id": "zzz",
                                                                            "category": "home_care"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["reason"] == "unknown_funder"
    assert unknown.json()["error"]["details"]["funder_id"] == "zzz"
    await registry.post("/funders", json=funder())
    approver = bearer("funder_provider_approver", funder_id="091")
    unused = await registry.post(f"/providers/{provider}/approvals", json={"category": "home_care"}, headers=approver)
    assert unused.status_code == 422
    assert unused.json()["error"]["reason"] == "category_not_used_by_funder"
    assert unused.json()["error"]["details"]["categories"] == ["home_care"]
    await rulebook(registry, "091", "home_care")
    r = await registry.post(f"/providers/{provider}/approvals", json={"category": "home_care"}, headers=approver)
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["rulebook_version"]) == ("active", "2026.1")
    again = await registry.post(f"/providers/{provider}/approvals", json={"category": "home_care"}, headers=approver)
    assert (again.status_code, again.json()["id"]) == (200, r.json()["id"])
    bad = await registry.post(f"/providers/{provider}/approvals", json={"category": "astrology", "note": "x"},
                              headers=approver)
    assert field_reasons(bad) == {"category": "unknown_category", "note": "extra_forbidden"}


async def test_a_provider_is_checked_field_by_field_all_at_once(registry):  # noqa: ANN001
    r = await registry.post("/providers", json={"business_id": "2617416-5", "name": "   ", "iban": "FI2112345600000786",
                                                "homepage": "https://example.fi"})
    assert r.status_code == 422
    assert field_reasons(r) == {"business_id": "invalid_business_id", "name": "string_too_short",
                                "iban": "invalid_iban", "homepage": "extra_forbidden"}
    assert "2617416-5" not in r.text and "FI2112345600000786" not in r.text, "the answer does not repeat the input"
    blank = await registry.post("/providers", json={"business_id": random_business_id(), "name": " \t ",
                                                    "iban": IBAN})
    assert field_reasons(blank) == {"name": "string_too_short"}, "a name of only spaces is no name"
    ok = await registry.post("/providers", json={"business_id": " 26174164 ", "name": "  Kotihoiva Oy ",
                                                 "iban": "FI21 1234 5600 0007 85"})
    assert ok.status_code == 201, ok.text
    assert (ok.json()["business_id"], ok.json()["name"], ok.json()["iban"]) == (
        "2617416-4", "Kotihoiva Oy", IBAN)
    twin = await registry.post("/providers", json={"business_id": "2617416-4", "name": "Toinen Oy", "iban": IBAN})
    assert twin.status_code == 409
    assert twin.json()["error"]["reason"] == "provider_exists"
    assert twin.json()["error"]["details"] == {"business_id": "2617416-4", "provider_id": ok.json()["id"]}


async def test_the_register_is_searched_and_listed_in_pages(registry):  # noqa: ANN001
    await registry.post("/funders", json=funder())
    await registry.post("/funders", json=funder("092", name="Espoo"))
    await rulebook(registry, "091", "cleaning")
    await rulebook(registry, "092", "cleaning")
    ids = {}
    for name in ("Cura Oy", "Aava Oy", "Bona Oy", "Aava Oy"):  # two of one name: the id breaks the tie
        r = await registry.post("/providers", json={"business_id": random_business_id(), "name": name, "iban": IBAN})
        ids.setdefault(name, []).append(r.json())
    await registry.post(f"/providers/{ids['Bona Oy'][0]['id']}/approvals",
                        json={"funder_id": "092", "category": "cleaning"})
    await registry.post(f"/providers/{ids['Cura Oy'][0]['id']}/approvals",
                        json={"funder_id": "091", "category": "cleaning"})

    pages, cursor = [], None
    while True:
        r = await registry.get("/providers", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                               headers=bearer("funder_reporting", funder_id="091"))
        assert r.status_code == 200, r.text
        pages.append([p["name"] for p in r.json()["items"]])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [["Aava Oy", "Aava Oy"], ["Bona Oy", "Cura Oy"]]

    wanted = ids["Bona Oy"][0]
    compact = wanted["business_id"].replace("-", "")
    found = (await registry.get("/providers", params={"business_id": f" {compact} "})).json()
    assert [p["id"] for p in found["items"]] == [wanted["id"]] and found["next_cursor"] is None
    assert found["items"][0]["approvals"][0]["funder_id"] == "092"
    bad = await registry.get("/providers", params={"business_id": "2617416-5"})
    assert bad.status_code == 422 and field_reasons(bad) == {"business_id": "invalid_business_id"}
    cleaning = (await registry.get("/providers", params={"category": "cleaning"})).json()["items"]
    assert [p["name"] for p in cleaning] == ["Bona Oy", "Cura Oy"]
    in_091 = (await registry.get("/providers", params={"funder_id": "091", "category": "cleaning"})).json()
    assert [p["name"] for p in in_091["items"]] == ["Cura Oy"]
    own = (await registry.get("/providers", headers=bearer("provider_manager",
                                                           provider_id=ids["Aava Oy"][1]["id"]))).json()
    assert [p["id"] for p in own["items"]] == [ids["Aava Oy"][1]["id"]], "a provider's staff see their own"
    assert (await registry.get("/providers", params={"limit": 501})).status_code == 422
    assert (await registry.get("/providers", params={"cursor": "bm90LWEtY3Vyc29y"})).status_code == 400
