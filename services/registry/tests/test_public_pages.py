"""The public pages of the register (no login): one approved provider as a client comparing providers
sees it, and the funders with the categories they use. What the public must NOT see (the provider's
account, insurance policies, supervisory register number, the funders' notes, the funders' contract
terms) is checked as carefully as what it sees. The registry runs in this process on PostgreSQL and
the embedded SQLite, on a bus namespace of its own on the real RabbitMQ; everything is made through
its HTTP API."""
from __future__ import annotations

import json
from datetime import date, timedelta

import httpx

from seteli_shared.devtools import random_business_id

IBAN = "FI2112345600000785"
BIC = "NDEAFIHH"
SECRET_NOTE = "sisainen huomautus: tarkistetaan laskutus"


def anonymous(registry: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=registry.app), base_url="http://registry")


async def _ok(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


async def _world(registry: httpx.AsyncClient) -> dict:
    """Funders 091 (home care, cleaning), 092 (home care), 093 (no rulebook yet); provider P approved by
    091 for home care (priced, with tariffs) and cleaning (no price; suspended from a later date, with a
    note), and by 092 for home care until a suspension today; Q approved only by 092 and revoked today;
    N registered, never approved."""
    today = date.today()
    for funder, name, kind in (("091", "Helsingin kaupunki", "municipality"),
                               ("092", "Vantaan kaupunki", "municipality"),
                               ("093", "Itä-Uudenmaan hyvinvointialue", "wellbeing_services_county")):
        await _ok(await registry.post("/funders", json={"funder_id": funder, "name": name, "kind": kind,
                                                        "contact_email": f"kirjaamo{funder}@example.fi"}))
    for funder, category in (("091", "home_care"), ("091", "cleaning"), ("092", "home_care")):
        for version in ("2026.1", "2026.2"):  # two versions: the category is listed once
            await _ok(await registry.post(f"/funders/{funder}/rulebooks", json={
                "category": category, "rulebook_version": version, "title": f"Sääntökirja {category}"}))
    insurance = {"insurer": "Vakuutus Oy", "valid_until": (today + timedelta(days=400)).isoformat()}
    ids = {}
    for key in ("P", "Q", "N"):
        business_id = random_business_id()
        provider = await _ok(await registry.post("/providers", json={
            "business_id": business_id, "name": f"{key} Hoiva Oy", "iban": IBAN}))
        ids[key], ids[f"{key}_business_id"] = provider["id"], provider["business_id"]
        await _ok(await registry.patch(f"/providers/{provider['id']}", json={
            "contact_email": f"{key.lower()}@hoiva.example.fi", "contact_phone": "+358 40 123 4567", "bic": BIC,
            "prepayment_registered": True, "prepayment_checked_on": today.isoformat(),
            "liability_insurance": {**insurance, "policy_number": "VASTUU-778899"},
            "patient_insurance": {**insurance, "policy_number": "POTILAS-112233"},
            "supervisory_register_number": "VALVIRA-445566",
            "languages": ["fi", "sv"], "municipalities": ["092", "049"],
            "service_units": [{"name": f"{key} Kallio", "street_address": "Helsinginkatu 1", "postal_code": "00530",
                               "municipality_code": "091"}]}))
    approvals = {}
    for key, funder, category in (("P", "091", "home_care"), ("P", "091", "cleaning"), ("P", "092", "home_care"),
                                  ("Q", "092", "home_care")):
        approval = await _ok(await registry.post(f"/providers/{ids[key]}/approvals",
                                                 json={"funder_id": funder, "category": category}))
        approvals[(key, funder, category)] = approval["id"]
    price = await _ok(await registry.post(f"/providers/{ids['P']}/price-lists", json={
        "funder_id": "091", "category": "home_care", "unit_price_cents": 3350,
        "tariffs": {"weekday_evening": 3860, "sunday": 5580}, "effective_from": today.isoformat()}))
    ids["price_list"] = price["id"]
    # a later price, not in force yet
    await _ok(await registry.post(f"/providers/{ids['P']}/price-lists", json={
        "funder_id": "091", "category": "home_care", "unit_price_cents": 3600,
        "effective_from": (today + timedelta(days=40)).isoformat()}))
    await _ok(await registry.post(f"/approvals/{approvals[('P', '091', 'cleaning')]}/suspend", json={
        "reason": "funder_decision", "effective_from": (today + timedelta(days=10)).isoformat(),
        "message": SECRET_NOTE}))
    await _ok(await registry.post(f"/approvals/{approvals[('P', '092', 'home_care')]}/suspend", json={
        "reason": "funder_decision", "effective_from": today.isoformat(), "message": SECRET_NOTE}))
    await _ok(await registry.post(f"/approvals/{approvals[('Q', '092', 'home_care')]}/revoke", json={
        "reason": "funder_decision", "effective_from": today.isoformat(), "grounds": SECRET_NOTE}))
    return ids


async def test_a_providers_public_page_shows_what_a_client_needs_and_nothing_else(registry):  # noqa: ANN001
    ids = await _world(registry)
    today = date.today()
    async with anonymous(registry) as public:  # no token at all
        r = await public.get(f"/public/providers/{ids['P']}")
        assert r.status_code == 200, r.text
        page = r.json()
        assert page == {
            "provider_id": ids["P"], "name": "P Hoiva Oy", "business_id": ids["P_business_id"],
            "contact_email": "p@hoiva.example.fi", "contact_phone": "+358401234567",
            "languages": ["fi", "sv"], "municipalities": ["092", "049"],
            "service_units": [{"name": "P Kallio", "street_address": "Helsinginkatu 1", "postal_code": "00530",
                               "municipality_code": "091"}],
            "approvals": [
                # cleaning: suspended only from a later date, so still in force; no price published
                {"funder_id": "091", "funder_name": "Helsingin kaupunki", "category": "cleaning", "unit": "hour",
                 "approved_at": page["approvals"][0]["approved_at"], "price": None, "own_share_cents_per_unit": None},
                {"funder_id": "091", "funder_name": "Helsingin kaupunki", "category": "home_care", "unit": "hour",
                 "approved_at": page["approvals"][1]["approved_at"],
                 "price": {"price_list_id": ids["price_list"], "unit": "hour", "unit_price_cents": 3350,
                           "tariffs": {"weekday_evening": 3860, "sunday": 5580},
                           "effective_from": today.isoformat()}, "own_share_cents_per_unit": None},
                # 092's approval is suspended from today: not in force, not shown
            ]}, page
        text = r.text
        for hidden in (IBAN, BIC, "VASTUU-778899", "POTILAS-112233", "VALVIRA-445566", "Vakuutus Oy", SECRET_NOTE,
                       "funder_decision", "iban", "bic", "insurance", "prepayment", "supervisory", "application",
                       "status_reason", "history"):
            assert hidden.lower() not in text.lower(), hidden
        # against a voucher's value: the client's own share per unit, never below zero
        for value, shares in ((2500, [None, 850]), (4000, [None, 0])):
            r = await public.get(f"/public/providers/{ids['P']}?voucher_value_cents={value}")
            assert [a["own_share_cents_per_unit"] for a in r.json()["approvals"]] == shares, value
        r = await public.get(f"/public/providers/{ids['P']}?voucher_value_cents=-1")
        assert (r.status_code, r.json()["error"]["reason"]) == (422, "invalid_number")
        # another day, another register: before today 092's approval was in force; on the later date
        # the cleaning approval is suspended and the later price is in force
        earlier = (await public.get(f"/public/providers/{ids['P']}?date={(today - timedelta(days=1)).isoformat()}")
                   ).json()
        assert [(a["funder_id"], a["category"], a["price"]) for a in earlier["approvals"]] == [
            ("091", "cleaning", None), ("091", "home_care", None), ("092", "home_care", None)]
        later = (await public.get(f"/public/providers/{ids['P']}?date={(today + timedelta(days=45)).isoformat()}")
                 ).json()
        assert [(a["funder_id"], a["category"], a["price"]["unit_price_cents"]) for a in later["approvals"]] == [
            ("091", "home_care", 3600)]
        # a provider no funder has in its register is not found, however much the register knows of it
        for who in (ids["Q"], ids["N"], "no-such-provider"):
            r = await public.get(f"/public/providers/{who}")
            assert (r.status_code, r.json()["error"]["reason"]) == (404, "provider_not_found"), who
            assert "Hoiva" not in r.text and IBAN not in r.text
        assert (await public.get(f"/public/providers/{ids['Q']}?date={(today - timedelta(days=1)).isoformat()}")
                ).status_code == 200, "Q was in 092's register until today"
        r = await public.get(f"/public/providers/{ids['P']}?date=yesterday")
        assert (r.status_code, r.json()["error"]["reason"]) == (422, "invalid_date")
        r = await public.get("/public/providers/" + "x" * 65)
        assert r.status_code == 422 and r.json()["error"]["reason"] == "invalid_request"


async def test_the_public_list_of_funders_names_the_categories_they_use_and_no_contract_terms(registry):  # noqa: ANN001
    await _world(registry)
    async with anonymous(registry) as public:
        r = await public.get("/public/funders")
        assert r.status_code == 200, r.text
        assert r.json() == {"items": [
            {"funder_id": "091", "name": "Helsingin kaupunki", "kind": "municipality",
             "categories": ["cleaning", "home_care"]},
            {"funder_id": "092", "name": "Vantaan kaupunki", "kind": "municipality", "categories": ["home_care"]},
            {"funder_id": "093", "name": "Itä-Uudenmaan hyvinvointialue", "kind": "wellbeing_services_county",
             "categories": []},
        ], "next_cursor": None}
        for hidden in ("operator_fee_rate", "settlement_days", "charge_deadline_days", "kirjaamo", "created_at"):
            assert hidden not in r.text, hidden
        # pages: the same funders, in the same order, one at a time
        seen, cursor = [], None
        while True:
            page = (await public.get("/public/funders?limit=1" + (f"&cursor={cursor}" if cursor else ""))).json()
            seen += [(f["funder_id"], f["categories"]) for f in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [(f["funder_id"], f["categories"]) for f in r.json()["items"]]
        r = await public.get("/public/funders?cursor=bm9wZQ")
        assert r.status_code == 400 and json.loads(r.text)["error"]["reason"] == "invalid_cursor"
