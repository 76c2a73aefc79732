"""The provider's life cycle over HTTP: the catalogue, funders' rulebooks, the provider's register
data, applications (each transition and refusal), suspension, reinstatement, revocation and the
daily check, with the events they put on the real RabbitMQ."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import httpx

from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.devtools import random_business_id
from seteli_shared.testing import eventually

IBAN = "FI2112345600000785"  # a Nordea account: BIC NDEAFIHH
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TODAY = NOW.date()
APPROVER = {"Authorization": f"Bearer {mint('t:approver', ['funder_provider_approver'], funder_id='091')}"}
OTHER_APPROVER = {"Authorization": f"Bearer {mint('t:approver2', ['funder_provider_approver'], funder_id='092')}"}


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


def error(answer: httpx.Response) -> dict:
    return answer.json()["error"]


def field_reasons(answer: httpx.Response) -> dict[str, str]:
    e = error(answer)
    assert e["reason"] == "invalid_request", e
    return {".".join(e_["loc"][1:]): e_["reason"] for e_ in e["details"]["errors"]}


def complete(until: date = TODAY + timedelta(days=365), checked: date = TODAY) -> dict:
    return {
        "contact_email": "Toimisto@Hoiva.fi", "contact_phone": "+358 40 123 4567", "bic": "NDEAFIHH",
        "prepayment_registered": True, "prepayment_checked_on": checked.isoformat(),
        "liability_insurance": {"insurer": "Vakuutus Oy", "policy_number": "VA-1", "valid_until": until.isoformat()},
        "patient_insurance": {"insurer": "Potilasvakuutus Oy", "policy_number": "PV-1",
                              "valid_until": until.isoformat()},
        "supervisory_register_number": "SOTERI-123", "languages": ["fi", "sv"], "municipalities": ["091", "049"],
        "service_units": [{"name": "Kotihoiva Kallio", "street_address": "Helsinginkatu 1", "postal_code": "00530",
                           "municipality_code": "091"}],
    }


async def setup(registry, *categories: str, max_age: int = 365) -> None:  # noqa: ANN001
    registry.app.state.clock = FixedClock(NOW)
    for code in ("091", "092"):
        r = await registry.post("/funders", json={"funder_id": code, "name": f"Kunta {code}", "kind": "municipality"})
        assert r.status_code == 201, r.text
    for category in categories:
        r = await registry.post("/funders/091/rulebooks", json={
            "category": category, "rulebook_version": "2026.1", "title": "Sääntökirja",
            "prepayment_check_max_age_days": max_age}, headers=APPROVER)
        assert r.status_code == 201, r.text


async def provider(registry, data: dict | None = None) -> str:  # noqa: ANN001
    r = await registry.post("/providers", json={"business_id": random_business_id(), "name": "Hoiva Oy", "iban": IBAN})
    assert r.status_code == 201, r.text
    if data is not None:
        r2 = await registry.patch(f"/providers/{r.json()['id']}", json=data)
        assert r2.status_code == 200, r2.text
    return r.json()["id"]


async def events(spy, *wanted: str) -> list[dict]:  # noqa: ANN001
    """Events from the spy queue until one of each wanted type (``provider.approved``...) has come."""
    seen: list[dict] = []

    async def until_all():  # noqa: ANN202
        message = await spy.get(no_ack=True, fail=False)
        if message:
            seen.append(json.loads(message.body))
        types = [e["type"] for e in seen]
        return all(f"fi.seteli.{w}.v1" in types for w in wanted) or None
    await eventually(until_all)
    return seen


def of_type(seen: list[dict], name: str) -> list[dict]:
    return [e["data"] for e in seen if e["type"] == f"fi.seteli.{name}.v1"]


async def test_the_catalogue_is_public_with_names_in_three_languages(registry):  # noqa: ANN001
    r = await registry.get("/categories", headers={})
    assert r.status_code == 200
    by_code = {c["code"]: c for c in r.json()}
    assert by_code["home_care"] == {"code": "home_care", "unit": "hour", "name_fi": "Kotihoito",
                                    "name_sv": "Hemvård", "name_en": "Home care", "core": True}
    core = {c for c, v in by_code.items() if v["core"]}
    assert core == {"social_rehabilitation", "home_care", "housing_services", "work_activity", "home_nursing",
                    "medical_rehabilitation", "dental_prosthetics"}
    assert by_code["dental_prosthetics"]["unit"] == "package" and by_code["orthodontics"]["core"] is False


async def test_a_rulebook_version_is_published_once_and_never_changes(registry, spy):  # noqa: ANN001
    await setup(registry)
    body = {"category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon sääntökirja",
            "document_url": "https://hel.fi/saantokirja.pdf", "price_changes_need_approval": True}
    r = await registry.post("/funders/091/rulebooks", json=body, headers=APPROVER)
    assert r.status_code == 201, r.text
    assert r.json()["prepayment_check_max_age_days"] == 365
    again = await registry.post("/funders/091/rulebooks", json=body)
    assert (again.status_code, again.json()) == (200, r.json())
    changed = await registry.post("/funders/091/rulebooks", json={**body, "title": "Toinen"})
    assert (changed.status_code, error(changed)["reason"]) == (409, "rulebook_version_exists")
    assert error(changed)["details"]["differing"] == ["title"]
    assert (await registry.post("/funders/091/rulebooks", json=body, headers=OTHER_APPROVER)).status_code == 404
    assert (await registry.post("/funders/999/rulebooks", json=body)).status_code == 404
    assert (await registry.post("/funders/091/rulebooks", json=body,
                                headers=bearer("provider_manager", provider_id="p"))).status_code == 403
    bad = await registry.post("/funders/091/rulebooks", json={"category": "astrology", "rulebook_version": "a b",
                                                              "title": " ", "document_url": "ftp://x",
                                                              "prepayment_check_max_age_days": 0})
    assert field_reasons(bad) == {"category": "unknown_category", "rulebook_version": "string_pattern_mismatch",
                                  "title": "string_too_short", "document_url": "invalid_url",
                                  "prepayment_check_max_age_days": "greater_than_equal"}
    await registry.post("/funders/091/rulebooks", json={**body, "rulebook_version": "2026.2"})
    listed = await registry.get("/funders/091/rulebooks", headers={})
    assert [x["rulebook_version"] for x in listed.json()["items"]] == ["2026.1", "2026.2"]
    one = await registry.get("/funders/091/rulebooks/home_care/2026.1", headers={})
    assert (one.status_code, one.json()["title"]) == (200, "Kotihoidon sääntökirja")
    assert (await registry.get("/funders/091/rulebooks/home_care/9.9")).status_code == 404
    seen = await events(spy, "rulebook.published")
    published = of_type(seen, "rulebook.published")[0]
    assert published | {"published_at": None} == {
        "funder_id": "091", "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon sääntökirja",
        "price_changes_need_approval": True, "published_at": None}


async def test_the_provider_keeps_its_register_data(registry, spy):  # noqa: ANN001
    await setup(registry)
    p = await provider(registry)
    manager = bearer("provider_manager", provider_id=p)
    r = await registry.patch(f"/providers/{p}", json=complete(), headers=manager)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["contact_email"], got["contact_phone"], got["bic"]) == ("toimisto@hoiva.fi", "+358401234567",
                                                                          "NDEAFIHH")
    assert got["liability_insurance"] == {"insurer": "Vakuutus Oy", "policy_number": "VA-1",
                                          "valid_until": (TODAY + timedelta(days=365)).isoformat()}
    assert (got["languages"], got["municipalities"]) == (["fi", "sv"], ["091", "049"])
    assert got["service_units"][0]["postal_code"] == "00530" and got["prepayment_registered"] is True
    assert (await registry.get(f"/providers/{p}", headers=manager)).json() == got
    partial = await registry.patch(f"/providers/{p}", json={"languages": ["se"], "supervisory_register_number": None})
    assert (partial.json()["languages"], partial.json()["supervisory_register_number"]) == (["se"], None)
    assert partial.json()["service_units"] == got["service_units"], "what is left out stays"
    wrong_bank = await registry.patch(f"/providers/{p}", json={"bic": "OKOYFIHH"})
    assert (wrong_bank.status_code, error(wrong_bank)["reason"]) == (422, "bic_does_not_match_iban")
    bad = await registry.patch(f"/providers/{p}", json={
        "bic": "NDEAFIH", "contact_phone": "call me", "languages": ["xx"], "municipalities": ["91"],
        "service_units": [{"name": "U", "street_address": "K 1", "postal_code": "0053", "municipality_code": "1000"}]})
    assert field_reasons(bad) == {
        "bic": "invalid_bic", "contact_phone": "invalid_phone", "languages.0": "unknown_language",
        "municipalities.0": "string_pattern_mismatch", "service_units.0.postal_code": "string_pattern_mismatch",
        "service_units.0.municipality_code": "string_pattern_mismatch"}
    future = await registry.patch(f"/providers/{p}", json={"prepayment_checked_on": (TODAY + timedelta(days=1)).isoformat()})
    assert error(future)["reason"] == "prepayment_checked_on_in_future"
    other = bearer("provider_manager", provider_id="someone-else")
    assert (await registry.patch(f"/providers/{p}", json={"languages": ["fi"]}, headers=other)).status_code == 404
    assert (await registry.patch(f"/providers/{p}", json={"languages": ["fi"]}, headers=APPROVER)).status_code == 403
    seen = await events(spy, "provider.updated")
    updates = of_type(seen, "provider.updated")
    assert updates[0]["provider_id"] == p and "service_units" in updates[0]["changed"]


async def test_an_application_goes_from_draft_to_approval(registry, spy):  # noqa: ANN001
    await setup(registry, "home_care", "home_nursing")
    p = await provider(registry)
    manager = bearer("provider_manager", provider_id=p)
    unknown = await registry.post(f"/providers/{p}/applications", json={"funder_id": "999", "categories": ["home_care"]},
                                  headers=manager)
    assert (unknown.status_code, error(unknown)["reason"]) == (422, "unknown_funder")
    unused = await registry.post(f"/providers/{p}/applications",
                                 json={"funder_id": "091", "categories": ["home_care", "cleaning"]}, headers=manager)
    assert (unused.status_code, error(unused)["reason"]) == (422, "category_not_used_by_funder")
    assert error(unused)["details"]["categories"] == ["cleaning"]
    r = await registry.post(f"/providers/{p}/applications",
                            json={"funder_id": "091", "categories": ["home_care", "home_nursing"]}, headers=manager)
    assert r.status_code == 201, r.text
    app = r.json()
    assert (app["status"], app["rulebook_versions"]) == ("draft", {"home_care": "2026.1", "home_nursing": "2026.1"})
    again = await registry.post(f"/providers/{p}/applications",
                                json={"funder_id": "091", "categories": ["home_care", "home_nursing"]}, headers=manager)
    assert (again.status_code, again.json()["id"]) == (200, app["id"]), "the same draft again"

    incomplete = await registry.post(f"/applications/{app['id']}/submit", headers=manager)
    assert (incomplete.status_code, error(incomplete)["reason"]) == (422, "application_incomplete")
    assert error(incomplete)["details"]["missing"] == [
        {"item": "prepayment_register", "reason": "not_in_prepayment_register"},
        {"item": "liability_insurance", "reason": "insurance_lapsed"},
        {"item": "patient_insurance", "reason": "insurance_lapsed"},
        {"item": "service_units", "reason": "no_service_unit"}]
    assert (await registry.get(f"/applications/{app['id']}")).json()["status"] == "draft", "nothing changed"
    await registry.patch(f"/providers/{p}", json=complete(), headers=manager)
    assert (await registry.post(f"/applications/{app['id']}/approve", headers=APPROVER)).json()["error"] == {
        "reason": "invalid_transition", "message": "an application that is draft cannot be taken to approve",
        "details": {"status": "draft", "action": "approve"}}

    submitted = await registry.post(f"/applications/{app['id']}/submit", headers=manager)
    assert (submitted.status_code, submitted.json()["status"]) == (200, "submitted"), submitted.text
    twice = await registry.post(f"/applications/{app['id']}/submit", headers=manager)
    assert (twice.status_code, error(twice)["details"]["status"]) == (409, "submitted")
    asked = await registry.post(f"/applications/{app['id']}/request-info", json={"message": "Henkilöstön pätevyydet?"},
                                headers=APPROVER)
    assert (asked.json()["status"], asked.json()["message"]) == ("info_requested", "Henkilöstön pätevyydet?")
    assert (await registry.post(f"/applications/{app['id']}/approve", headers=APPROVER)).status_code == 409
    assert (await registry.post(f"/applications/{app['id']}/submit", headers=manager)).json()["status"] == "submitted"
    assert (await registry.post(f"/applications/{app['id']}/approve", headers=OTHER_APPROVER)).status_code == 404
    assert (await registry.post(f"/applications/{app['id']}/approve", headers=manager)).status_code == 403
    approved = await registry.post(f"/applications/{app['id']}/approve", headers=APPROVER)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert [(a["category"], a["status"], a["application_id"], a["rulebook_version"])
            for a in approved.json()["approvals"]] == [("home_care", "active", app["id"], "2026.1"),
                                                       ("home_nursing", "active", app["id"], "2026.1")]
    late = await registry.post(f"/applications/{app['id']}/reject", json={"reason": "late", "grounds": "Hakemus tuli myöhässä."},
                               headers=APPROVER)
    assert (late.status_code, error(late)["details"]["status"]) == (409, "approved")
    seen = await events(spy, "provider.applied", "provider.approved")
    applied = of_type(seen, "provider.applied")
    assert len(applied) == 2 and applied[0]["rulebook_versions"] == {"home_care": "2026.1", "home_nursing": "2026.1"}
    approved_events = await events(spy, "provider.approved")
    approvals = of_type(seen + approved_events, "provider.approved")
    assert {(a["category"], a["application_id"], a["rulebook_version"]) for a in approvals} == {
        ("home_care", app["id"], "2026.1"), ("home_nursing", app["id"], "2026.1")}
    shown = (await registry.get(f"/providers/{p}")).json()["approvals"]
    assert [a["history"][0]["action"] for a in shown] == ["approved", "approved"]


GROUNDS = "Hoitajia on liian vähän palvelun turvalliseen tuottamiseen."


async def test_an_application_is_rejected_with_a_reason_and_each_party_sees_its_own(registry, spy):  # noqa: ANN001
    await setup(registry, "home_care")
    r = await registry.post("/funders/092/rulebooks", json={"category": "home_care", "rulebook_version": "1",
                                                            "title": "Espoo"})
    assert r.status_code == 201
    p, q = await provider(registry, complete()), await provider(registry, complete())
    a = (await registry.post(f"/providers/{p}/applications", json={"funder_id": "091", "categories": ["home_care"]},
                             headers=bearer("provider_manager", provider_id=p))).json()
    b = (await registry.post(f"/providers/{q}/applications", json={"funder_id": "092", "categories": ["home_care"]})).json()
    assert (await registry.post(f"/providers/{p}/applications", json={"funder_id": "091", "categories": ["home_care"]},
                                headers=bearer("provider_manager", provider_id=q))).status_code == 404
    await registry.post(f"/applications/{a['id']}/submit")
    bad = await registry.post(f"/applications/{a['id']}/reject", json={"reason": "Not A Code", "grounds": "Perusteet"},
                              headers=APPROVER)
    assert field_reasons(bad) == {"reason": "string_pattern_mismatch"}
    # a rejection without written grounds, or with a dash or a code for them, is refused and changes nothing
    for body in ({"reason": "insufficient_staffing"}, {"reason": "insufficient_staffing", "grounds": "-"},
                 {"reason": "insufficient_staffing", "message": "   "},
                 {"reason": "insufficient_staffing", "grounds": "2024-11-01"}):
        r = await registry.post(f"/applications/{a['id']}/reject", json=body, headers=APPROVER)
        assert (r.status_code, error(r)["reason"]) == (422, "grounds_required"), body
    assert (await registry.get(f"/applications/{a['id']}")).json()["status"] == "submitted"
    rejected = await registry.post(f"/applications/{a['id']}/reject",
                                   json={"reason": "insufficient_staffing", "grounds": GROUNDS},
                                   headers=APPROVER)
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["reason"]) == ("rejected", "insufficient_staffing")
    # the provider reads the grounds with its application; the funder's list names the applicant
    mine = (await registry.get(f"/applications/{a['id']}", headers=bearer("provider_manager", provider_id=p))).json()
    assert (mine["status"], mine["grounds"]) == ("rejected", GROUNDS)
    entry = (await registry.get(f"/providers/{p}")).json()
    [listed] = (await registry.get("/applications", headers=APPROVER)).json()["items"]
    assert (listed["provider_name"], listed["business_id"]) == (entry["name"], entry["business_id"])
    assert (await registry.post(f"/applications/{a['id']}/submit")).json()["error"]["details"]["status"] == "rejected"
    seen = await events(spy, "provider.rejected")
    assert of_type(seen, "provider.rejected")[0] | {"rejected_at": None} == {
        "application_id": a["id"], "provider_id": p, "funder_id": "091", "categories": ["home_care"],
        "reason": "insufficient_staffing", "rejected_at": None}

    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]
    assert sorted(ids(await registry.get("/applications"))) == sorted([a["id"], b["id"]])  # one moment: by id
    assert ids(await registry.get("/applications", headers=APPROVER)) == [a["id"]]
    assert ids(await registry.get("/applications", headers=bearer("provider_manager", provider_id=q))) == [b["id"]]
    assert ids(await registry.get("/applications", params={"status": "rejected"})) == [a["id"]]
    assert (await registry.get(f"/applications/{b['id']}", headers=APPROVER)).status_code == 404
    assert (await registry.get(f"/applications/{a['id']}", headers=bearer("provider_manager", provider_id=q))
            ).status_code == 404
    assert (await registry.get(f"/applications/{a['id']}", headers=bearer("funder_reporting", funder_id="091"))
            ).status_code == 200
    assert (await registry.get("/applications/nope")).status_code == 404


async def test_an_approval_is_suspended_reinstated_and_revoked_for_good(registry, spy):  # noqa: ANN001
    await setup(registry, "home_care")
    p = await provider(registry, complete())
    approval = (await registry.post(f"/providers/{p}/approvals", json={"category": "home_care"},
                                    headers=APPROVER)).json()
    url = f"/approvals/{approval['id']}"
    past = await registry.post(f"{url}/suspend", json={"reason": "funder_decision", "grounds": GROUNDS,
                                                       "effective_from": (TODAY - timedelta(days=1)).isoformat()})
    assert (past.status_code, error(past)["reason"]) == (422, "effective_from_in_past")
    assert (await registry.post(f"{url}/suspend", json={"reason": "funder_decision", "effective_from": str(TODAY),
                                                        "grounds": GROUNDS}, headers=OTHER_APPROVER)).status_code == 404
    for body in ({"reason": "funder_decision", "effective_from": str(TODAY)},
                 {"reason": "funder_decision", "effective_from": str(TODAY), "grounds": "Selvitys"}):
        r = await registry.post(f"{url}/suspend", json=body, headers=APPROVER)
        assert (r.status_code, error(r)["reason"]) == (422, "grounds_required"), "grounds of a sentence at least"
    suspension = {"reason": "funder_decision", "effective_from": str(TODAY + timedelta(days=3)),
                  "grounds": "Asiakasvalitusten selvitys on kesken."}
    r = await registry.post(f"{url}/suspend", json=suspension, headers=APPROVER)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["status_reason"], r.json()["status_effective_from"]) == (
        "suspended", "funder_decision", str(TODAY + timedelta(days=3)))
    assert r.json()["status_grounds"] == suspension["grounds"]
    seen_by_provider = (await registry.get(f"/providers/{p}", headers=bearer("provider_manager", provider_id=p))).json()
    assert seen_by_provider["approvals"][0]["status_grounds"] == suspension["grounds"]
    assert (await registry.post(f"{url}/suspend", json=suspension)).json() == r.json(), "the same again: no change"
    other = await registry.post(f"{url}/suspend", json={**suspension, "reason": "other_reason"})
    assert (other.status_code, error(other)["details"]["status"]) == (409, "suspended")
    back = await registry.post(f"{url}/reinstate", headers=APPROVER)
    assert (back.status_code, back.json()["status"], back.json()["status_reason"]) == (200, "active", None)
    assert (await registry.post(f"{url}/reinstate")).json()["status"] == "active", "in force already"
    assert (await registry.post(f"{url}/revoke", json={"reason": "contract_breach", "effective_from": str(TODAY)})
            ).status_code == 422, "a revocation without grounds"
    revocation = {"reason": "contract_breach", "effective_from": str(TODAY),
                  "grounds": "Sopimusta rikottu toistuvasti: laskutettu tekemätöntä työtä."}
    gone = await registry.post(f"{url}/revoke", json=revocation, headers=APPROVER)
    assert (gone.status_code, gone.json()["status"], gone.json()["status_grounds"]) == (
        200, "revoked", revocation["grounds"])
    assert (await registry.post(f"{url}/revoke", json=revocation)).status_code == 200, "the same again"
    for action, body in (("reinstate", None), ("suspend", suspension), ("revoke", {**revocation, "reason": "x_y"})):
        r = await registry.post(f"{url}/{action}", json=body)
        assert (r.status_code, error(r)["reason"], error(r)["details"]["status"]) == (
            409, "invalid_transition", "revoked"), action
    assert (await registry.post("/approvals/nope/reinstate")).status_code == 404
    shown = (await registry.get(f"/providers/{p}")).json()["approvals"][0]
    assert shown["status"] == "revoked"
    assert [(h["action"], h["reason"]) for h in shown["history"]] == [
        ("approved", None), ("suspended", "funder_decision"), ("reinstated", None), ("revoked", "contract_breach")]
    seen = await events(spy, "provider.suspended", "provider.reinstated", "provider.revoked")
    assert len(of_type(seen, "provider.suspended")) == 1
    assert of_type(seen, "provider.revoked")[0]["effective_from"] == str(TODAY)


async def test_the_daily_check_suspends_unfit_providers_once(registry, spy):  # noqa: ANN001
    await setup(registry, "home_care", max_age=30)
    fit = await provider(registry, complete())
    lapsing = await provider(registry, complete(until=TODAY + timedelta(days=2)))
    stale = await provider(registry, complete(checked=TODAY - timedelta(days=20)))
    unregistered = await provider(registry, {**complete(), "prepayment_registered": False})
    approvals = {}
    for name, p in (("fit", fit), ("lapsing", lapsing), ("stale", stale), ("unregistered", unregistered)):
        r = await registry.post(f"/providers/{p}/approvals", json={"category": "home_care"}, headers=APPROVER)
        approvals[r.json()["id"]] = name
    assert (await registry.post("/checks/daily", headers=APPROVER)).status_code == 403
    first = await registry.post("/checks/daily")
    assert first.status_code == 200, first.text
    assert {(approvals[a["id"]], a["status_reason"]) for a in first.json()["suspended"]} == {
        ("unregistered", "not_in_prepayment_register")}
    registry.app.state.clock.advance(days=11)  # insurance lapsed two days ago, the check is 31 days old
    r = await registry.post("/checks/daily")
    assert r.json()["checked_on"] == str(TODAY + timedelta(days=11))
    assert {(approvals[a["id"]], a["status_reason"], a["status_effective_from"]) for a in r.json()["suspended"]} == {
        ("lapsing", "insurance_lapsed", str(TODAY + timedelta(days=11))),
        ("stale", "prepayment_register_check_outdated", str(TODAY + timedelta(days=11)))}
    assert (await registry.post("/checks/daily")).json()["suspended"] == [], "again the same day: nothing more"
    assert (await registry.get(f"/providers/{fit}")).json()["approvals"][0]["status"] == "active"
    seen = await events(spy, "provider.suspended")
    await eventually(lambda: _more(spy, seen, 3))
    assert sorted(e["reason"] for e in of_type(seen, "provider.suspended")) == [
        "insurance_lapsed", "not_in_prepayment_register", "prepayment_register_check_outdated"]


async def _more(spy, seen: list, suspended: int):  # noqa: ANN001, ANN202
    message = await spy.get(no_ack=True, fail=False)
    if message:
        seen.append(json.loads(message.body))
    return len(of_type(seen, "provider.suspended")) >= suspended or None
