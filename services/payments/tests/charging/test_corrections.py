"""Corrections after settlement and the funder's charging deadline, on PostgreSQL and the real RabbitMQ:
a settled charge corrected in part or reversed (a reversing ledger entry, ChargeCorrected on the bus, the
voucher's units back), the correction taken off the provider's next settlement with the funder (a negative
statement line, the fee given back) or carried forward when it is larger than that payout, the ledger's
invariants after all of it; a charge later than the funder's deadline refused in the single and the bulk
path (the funder's own term from FunderRegistered, or the default 90 days)."""
from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
from sqlalchemy import select

from payments.models import ChargeCorrection, LedgerEntry, LedgerTransaction
from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.events import FunderRegistered, FunderTermsChanged, ProviderRegistered
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import eventually

# the app, its bus and the steps: ``live`` (conftest.py)
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
TODAY = date(2026, 6, 20)


def as_(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


def charger(provider_id: str) -> dict:
    return as_("provider_charger", provider_id=provider_id)


async def test_a_settled_charge_corrected_in_part_is_taken_off_the_next_payout_with_its_fee(live):
    w, p = live, "prov-fix"
    v = await w.voucher(p, 1, units="8")
    first = await w.charge(p, v, "visit-1", "4")  # 4 h x 25.00 = 100.00
    unsettled = await w.charge(p, v, "visit-2", "4")
    r = await w.client.post(f"/charges/{unsettled['id']}/corrections", headers=charger(p),
                            json={"reason": "wrong_units", "units": "3"})
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "charge_not_settled"), "cancel it instead"
    assert (await w.client.post(f"/charges/{unsettled['id']}/cancel", headers=charger(p))).status_code == 200
    [s1] = await w.settle()
    assert (s1["gross_cents"], s1["fee_cents"], s1["net_cents"]) == (10000, 500, 9500)
    # the voucher's 8 hours: 4 charged, so 5 more are refused
    refused = await w.charge(p, v, "visit-3", "5", expect=422)
    assert refused["error"]["reason"] == "units_exceeded"

    # only the charge's provider and its funder's finance staff may correct it; others do not find it
    body = {"reason": "wrong_units", "units": "3"}
    assert (await w.client.post(f"/charges/{first['id']}/corrections", json=body,
                                headers=charger("prov-other"))).status_code == 404
    assert (await w.client.post(f"/charges/{first['id']}/corrections", json=body,
                                headers=as_("funder_finance", funder_id="092"))).status_code == 404
    assert (await w.client.post(f"/charges/{first['id']}/corrections", json=body,
                                headers=as_("funder_reporting", funder_id="091"))).status_code == 403
    for wrong, reason in (({"reason": "wrong_units", "units": "5"}, "correction_increases_charge"),
                          ({"reason": "wrong_units", "units": "4"}, "correction_changes_nothing"),
                          ({"reason": "wrong_price", "amount_cents": 10001}, "correction_increases_charge"),
                          ({"reason": "because", "units": "3"}, "invalid_request"),
                          ({"reason": "wrong_units"}, "invalid_request"),
                          ({"reason": "wrong_units", "reversal": True, "units": "1"}, "invalid_request")):
        r = await w.client.post(f"/charges/{first['id']}/corrections", json=wrong, headers=charger(p))
        assert (r.status_code, r.json()["error"]["reason"]) == (422, reason), wrong

    fix = await w.correct(first["id"], body, charger(p))
    assert (fix["kind"], fix["units"], fix["amount_cents"], fix["fee_cents"], fix["net_cents"]) == (
        "partial", "1.00", 2500, 125, 2375)
    assert (fix["corrected_settlement_id"], fix["offset_settlement_id"]) == (s1["id"], None)
    # the reversing entry: the funder owes 25.00 less, the provider owes it back until the next settlement
    balances = await w.balances()
    assert balances["funder:091:voucher_spend"] == 7500 and balances[f"provider:{p}:payable"] == 2500
    await w.check()
    # the hour is the voucher's again: 5 hours are left now
    await w.charge(p, v, "visit-3", "5")
    [s2] = await w.settle()  # 5 h = 125.00, less the correction's 25.00; fee 6.25 less 1.25 given back
    assert (s2["gross_cents"], s2["fee_cents"], s2["net_cents"], s2["charge_count"]) == (10000, 500, 9500, 1)
    statement = await w.statement(s2["id"], charger(p))
    lines = [(x["line_type"], x["provider_reference"], x["units"], x["gross_cents"], x["fee_cents"], x["net_cents"])
             for x in statement["lines"]]
    assert lines == [("charge", "visit-3", "5.00", 12500, 625, 11875),
                     ("correction", "visit-1", "-1.00", -2500, -125, -2375)]
    assert (statement["correction_count"], statement["net_cents"]) == (1, 9500)
    assert sum(x[5] for x in lines) == statement["net_cents"]
    seen = (await w.client.get(f"/charges/{first['id']}", headers=charger(p))).json()
    assert (seen["units"], seen["amount_cents"], seen["corrected_units"], seen["corrected_amount_cents"]) == (
        "4.00", 10000, "1.00", 2500)
    [listed] = (await w.client.get(f"/charges/{first['id']}/corrections",
                                   headers=as_("funder_finance", funder_id="091"))).json()
    assert listed["offset_settlement_id"] == s2["id"]
    assert (await w.client.get(f"/charges/{first['id']}/corrections", headers=charger("prov-other"))).status_code == 404
    check = await w.check()
    assert all(check["checks"].values())
    assert (await w.balances())[f"provider:{p}:payable"] == 0
    # announced on the bus, with the charge's figures after the correction
    async def corrected():  # noqa: ANN202
        return await w.bus_events("charge.corrected.v1") or None
    [event] = await eventually(corrected)
    assert event["subject"] == first["id"]
    assert {k: event["data"][k] for k in ("correction_id", "kind", "units", "amount_cents", "fee_cents", "net_cents",
                                          "units_after", "amount_cents_after", "settlement_id")} == {
        "correction_id": fix["id"], "kind": "partial", "units": "1.00", "amount_cents": 2500, "fee_cents": 125,
        "net_cents": 2375, "units_after": "3.00", "amount_cents_after": 7500, "settlement_id": s1["id"]}


async def test_a_reversal_larger_than_the_next_payout_carries_forward_and_never_pays_a_negative_amount(live):
    w, p = live, "prov-rev"
    await w.publish(ProviderRegistered(provider_id=p, business_id=random_business_id(), name="Kotihoiva Oy",
                                       registered_at=w.clock.now(), iban="FI2112345600000785"), source="registry")
    v = await w.voucher(p, 1, units="100")
    first = await w.charge(p, v, "r-1", "4")
    [paid] = await w.settle()
    finance = as_("funder_finance", funder_id="091")
    rev = await w.correct(first["id"], {"reason": "service_not_delivered", "reversal": True}, finance)
    assert (rev["kind"], rev["amount_cents"], rev["fee_cents"], rev["net_cents"]) == ("reversal", 10000, 500, 9500)
    again = await w.client.post(f"/charges/{first['id']}/corrections", headers=charger(p),
                                json={"reason": "service_not_delivered", "reversal": True})
    assert (again.status_code, again.json()["error"]["reason"]) == (409, "charge_already_reversed")
    # the next payout (1 h, 23.75 net) is smaller than the 95.00 owed back: paid whole, the reversal waits
    await w.charge(p, v, "r-2", "1")
    [small] = await w.settle()
    assert (small["gross_cents"], small["net_cents"]) == (2500, 2375)
    assert [x["line_type"] for x in (await w.statement(small["id"]))["lines"]] == ["charge"]
    [waiting] = (await w.client.get(f"/charges/{first['id']}/corrections", headers=charger(p))).json()
    assert waiting["offset_settlement_id"] is None
    assert (await w.balances())[f"provider:{p}:payable"] == 10000
    await w.check()
    # a run with nothing new to pay leaves it waiting too
    assert await w.settle() == []
    # 8 h (200.00, net 190.00) covers it: 190.00 - 95.00
    await w.charge(p, v, "r-3", "8")
    [big] = await w.settle()
    assert (big["gross_cents"], big["fee_cents"], big["net_cents"]) == (10000, 500, 9500)
    statement = await w.statement(big["id"])
    assert statement["correction_count"] == 1
    # the bank is told to pay what is left: 95.00
    file = await w.client.get(f"/settlement-runs/{statement['run_id']}/payment-file", headers=OPERATOR)
    assert file.status_code == 200, file.text
    amounts = re.findall(rb'<InstdAmt Ccy="EUR">([0-9.]+)</InstdAmt>', file.content)
    assert amounts == [b"95.00"]
    check = await w.check()
    assert all(check["checks"].values())
    balances = await w.balances()
    assert balances[f"provider:{p}:payable"] == 0
    # funder: 100 + 25 + 200 spent, 100 reversed; the operator: 5 % of what stands
    assert balances["funder:091:voucher_spend"] == 22500 and balances["operator:fee_revenue"] == -1125
    invoice = (await w.client.get("/funders/091/invoices/2026-06", headers=finance)).json()
    assert (invoice["total"]["gross_cents"], invoice["total"]["fee_cents"]) == (22500, 1125), invoice
    # the reversed hours are the voucher's again
    async with w.app.state.runtime.sessions() as session:
        kinds = (await session.execute(select(LedgerTransaction.kind).order_by(LedgerTransaction.created_at))
                 ).scalars().all()
        assert kinds.count("charge_correction") == 1
        stored = (await session.execute(select(ChargeCorrection))).scalars().all()
        assert [(c.kind, c.reason, c.offset_settlement_id) for c in stored] == [
            ("reversal", "service_not_delivered", big["id"])]
        # the provider's settlement notice says a correction was taken off
        notices = [json.loads(m.body)["data"] for m in (await session.execute(select(OutboxMessage).where(
            OutboxMessage.routing_key.like(f"%notice.{p}.settlement")))).scalars()]
        assert {(n["settlement_id"], n["net_cents"], n["correction_count"]) for n in notices} == {
            (paid["id"], 9500, 0), (small["id"], 2375, 0), (big["id"], 9500, 1)}


async def test_a_correction_under_an_idempotency_key_is_made_once_and_its_answer_replayed(live):
    w, p = live, "prov-key"
    v = await w.voucher(p, 1, units="100")
    c = await w.charge(p, v, "k-1", "2")
    await w.settle()
    key = {**charger(p), "Idempotency-Key": "fix-k-1"}
    body = {"reason": "wrong_units", "units": "1.5"}
    first = await w.client.post(f"/charges/{c['id']}/corrections", json=body, headers=key)
    again = await w.client.post(f"/charges/{c['id']}/corrections", json=body, headers=key)
    assert (first.status_code, again.status_code, again.json()) == (201, 201, first.json())
    other = await w.client.post(f"/charges/{c['id']}/corrections", json={**body, "units": "1"}, headers=key)
    assert (other.status_code, other.json()["error"]["reason"]) == (422, "idempotency_key_reused")
    assert len((await w.client.get(f"/charges/{c['id']}/corrections", headers=charger(p))).json()) == 1
    async with w.app.state.runtime.sessions() as session:
        entries = (await session.execute(select(LedgerEntry.amount_cents).join(
            LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id).where(
            LedgerTransaction.kind == "charge_correction"))).scalars().all()
    assert sorted(entries) == [-1250, 1250]
    await w.check()
    # the ledger check catches a correction changed behind the service's back
    url = w.app.state.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE payments_charge_correction SET amount_cents = amount_cents + 1")
        check = (await w.client.get("/ledger/check", headers=OPERATOR)).json()
        assert not check["ok"] and not check["checks"]["corrections_within_settled_charges"], check
        assert check["corrections_not_matching_charges"][0]["charge_id"] == c["id"]
        await conn.execute("UPDATE payments_charge_correction SET amount_cents = amount_cents - 1")
        await conn.execute("UPDATE payments_charge SET corrected_units_x100 = 0")
        check = (await w.client.get("/ledger/check", headers=OPERATOR)).json()
        assert not check["checks"]["corrections_within_settled_charges"], check
        await conn.execute("UPDATE payments_charge SET corrected_units_x100 = 50")
        # a provider's payable that is not its open items: a ledger entry moved to another provider
        await conn.execute("UPDATE payments_ledger_entry SET account = 'provider:prov-else:payable' "
                           "WHERE account = 'provider:prov-key:payable' AND amount_cents = 1250")
        check = (await w.client.get("/ledger/check", headers=OPERATOR)).json()
        assert not check["checks"]["payables_equal_open_items"] and check["checks"]["entries_sum_to_zero"], check
        await conn.execute("UPDATE payments_ledger_entry SET account = 'provider:prov-key:payable' "
                           "WHERE account = 'provider:prov-else:payable'")
    finally:
        await conn.close()
    await w.check()


async def test_a_charge_after_the_funders_deadline_is_refused_singly_and_in_bulk(live):
    w, p = live, "prov-late"
    await w.publish(FunderRegistered(funder_id="091", name="Kunta 091", kind="municipality",
                                     operator_fee_rate=Decimal("0.05"), registered_at=w.clock.now(),
                                     charge_deadline_days=30), source="registry")
    v = await w.voucher(p, 1, units="100")
    on_time, late = TODAY - timedelta(days=30), TODAY - timedelta(days=31)
    await w.charge(p, v, "d-1", "1", day=on_time)
    refused = await w.charge(p, v, "d-2", "1", day=late, expect=422)
    assert refused["error"]["reason"] == "charge_deadline_passed"
    assert refused["error"]["details"] == {"deadline": (late + timedelta(days=30)).isoformat(), "deadline_days": 30}
    csv = ("voucher_id;provider_reference;service_date;units\n"
           f"{v};d-3;{on_time.strftime('%d.%m.%Y')};1\n"
           f"{v};d-4;{late.strftime('%d.%m.%Y')};1\n")
    r = await w.client.post("/charges/bulk", content=csv.encode(), headers={**charger(p), "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert [(x["line"], x["status"], x["reason"]) for x in r.json()["results"]] == [
        (2, "accepted", None), (3, "refused", "charge_deadline_passed")]
    # a funder payments has no contract terms of: the default, 90 days
    q = await w.voucher(p, 2, units="100", funder_id="092")
    await w.charge(p, q, "e-1", "1", day=TODAY - timedelta(days=90))
    refused = await w.charge(p, q, "e-2", "1", day=TODAY - timedelta(days=91), expect=422)
    assert (refused["error"]["reason"], refused["error"]["details"]["deadline_days"]) == ("charge_deadline_passed", 90)
    r = await w.client.post("/charges/bulk", headers=charger(p), json=[
        {"voucher_id": q, "provider_reference": "e-3", "service_date": (TODAY - timedelta(days=91)).isoformat(),
         "units": "1"}])
    assert [(x["status"], x["reason"]) for x in r.json()["results"]] == [("refused", "charge_deadline_passed")]
    # funder 091's new contract: 60 days; its registration heard again later (older terms) changes nothing
    await w.publish(FunderTermsChanged(funder_id="091", operator_fee_rate=Decimal("0.04"), settlement_days=14,
                                       charge_deadline_days=60, changed_at=w.clock.now() + timedelta(hours=1)),
                    source="registry")
    await w.publish(FunderRegistered(funder_id="091", name="Kunta 091", kind="municipality",
                                     operator_fee_rate=Decimal("0.05"), registered_at=w.clock.now(),
                                     charge_deadline_days=30), source="registry")
    await w.charge(p, v, "d-2", "1", day=late)
    refused = await w.charge(p, v, "d-5", "1", day=TODAY - timedelta(days=61), expect=422)
    assert refused["error"]["details"]["deadline_days"] == 60
    settled = {s["funder_id"]: s for s in await w.settle()}
    assert settled["091"]["fee_rate"] == "0.04" and settled["092"]["fee_rate"] == "0.05"
    await w.check()


async def test_the_daily_run_holds_back_a_payout_that_corrections_bring_under_the_minimum(live):  # noqa: ANN001
    w, p = live, "prov-hold"
    v = await w.voucher(p, 1, units="100")
    first = await w.charge(p, v, "h-1", "4")
    await w.settle()
    await w.correct(first["id"], {"reason": "wrong_units", "units": "2"}, charger(p))  # 47.50 owed back
    await w.charge(p, v, "h-2", "4")
    await w.charge(p, v, "h-3", "1", day=date(2026, 6, 19))  # 118.75 net, 71.25 after the correction: paid
    daily = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    [s] = daily["settlements"]
    assert (s["gross_cents"], s["net_cents"], s["payout_reason"]) == (7500, 7125, "minimum_reached")
    # 2 h accepted today (47.50 net) against a reversal of the rest (47.50): under EUR 40, it waits
    second = await w.charge(p, v, "h-4", "2")
    await w.correct(first["id"], {"reason": "service_not_delivered", "reversal": True}, charger(p))
    daily = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    assert daily["settlements"] == [] and daily["held_back"] == [
        {"funder_id": "091", "provider_id": p, "net_cents": 0}]
    [pending] = [c for c in (await w.client.get(f"/charges/{first['id']}/corrections", headers=charger(p))).json()
                 if c["kind"] == "reversal"]
    assert pending["offset_settlement_id"] is None
    assert (await w.client.get(f"/charges/{second['id']}", headers=charger(p))).json()["status"] == "accepted"
    # the 14-day guarantee wins: twelve days later both are paid, the correction taken off (a payout of 0.00)
    w.clock.advance(days=12)
    daily = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    [s] = daily["settlements"]
    assert (s["gross_cents"], s["fee_cents"], s["net_cents"], s["payout_reason"]) == (0, 0, 0, "guarantee_due")
    statement = await w.statement(s["id"])
    assert [(x["line_type"], x["net_cents"]) for x in statement["lines"]] == [("charge", 4750), ("correction", -4750)]
    file = await w.client.get(f"/settlement-runs/{daily['id']}/payment-file", headers=OPERATOR)
    assert (file.status_code, file.json()["error"]["reason"]) == (409, "nothing_to_pay"), "no transfer of 0.00, no file"
    check = await w.check()
    assert all(check["checks"].values())
