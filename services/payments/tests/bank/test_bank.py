"""The bank side of the ledger, on PostgreSQL and the real RabbitMQ: a funder's payment in, a run's payment
file executed by the bank (payouts out), the funder's account; a correction no payout could offset claimed
back from the provider by the daily run (or at once by the funder's finance staff) and repaid; the ledger's
invariants after each step, and each refusal with its reason."""
from __future__ import annotations

import json
from datetime import timedelta

import aio_pika
from stdnum import iso11649

from seteli_shared.auth import mint
from seteli_shared.devtools import random_business_id
from seteli_shared.events import ProviderRegistered
from seteli_shared.testing import eventually

# the app, its bus and the steps: ``live`` (conftest.py)
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
IBAN = "FI2112345600000785"


def as_(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


def charger(provider_id: str) -> dict:
    return as_("provider_charger", provider_id=provider_id)


async def _provider(w, p: str) -> None:  # noqa: ANN001
    await w.publish(ProviderRegistered(provider_id=p, business_id=random_business_id(), name="Kotihoiva Oy",
                                       registered_at=w.clock.now(), iban=IBAN), source="registry")


async def test_funder_payments_in_and_executed_payouts_out_keep_the_bank_account_and_the_ledger_true(live):
    w, p = live, "prov-bank"
    await _provider(w, p)
    v = await w.voucher(p, 1, units="20")
    await w.charge(p, v, "b-1", "4")  # 100.00
    await w.charge(p, v, "b-2", "4")
    finance = as_("funder_finance", funder_id="091")

    # the funder pays in (from the bank statement); the same line again is recorded once
    line = {"amount_cents": 15000, "booked_on": w.clock.today().isoformat(), "bank_reference": "ARCH-2026-0001"}
    first = await w.client.post("/funders/091/payments", json=line, headers=OPERATOR)
    assert first.status_code == 201, first.text
    again = await w.client.post("/funders/091/payments", json=line, headers=OPERATOR)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    other = await w.client.post("/funders/091/payments", json={**line, "amount_cents": 15001}, headers=OPERATOR)
    assert (other.status_code, other.json()["error"]["reason"]) == (409, "bank_reference_used")
    for bad, reason in (({**line, "amount_cents": 0}, "invalid_request"),
                        ({**line, "amount_cents": "x"}, "invalid_number"),  # (a bad number or date says so)
                        ({**line, "bank_reference": ""}, "invalid_request"),
                        ({**line, "booked_on": "31.12.2026"}, "invalid_date"),
                        ({k: v for k, v in line.items() if k != "booked_on"}, "invalid_request")):
        r = await w.client.post("/funders/091/payments", json=bad, headers=OPERATOR)
        assert (r.status_code, r.json()["error"]["reason"]) == (422, reason), bad
    assert (await w.client.post("/funders/091/payments", json=line, headers=finance)).status_code == 403
    # a mistyped funder is refused, not booked on an account nobody reads
    r = await w.client.post("/funders/019/payments", json={**line, "bank_reference": "ARCH-2026-0002"},
                            headers=OPERATOR)
    assert (r.status_code, r.json()["error"]["reason"]) == (404, "funder_not_found")
    account = (await w.client.get("/funders/091/account", headers=finance)).json()
    assert account == {"funder_id": "091", "charged_cents": 20000, "corrected_cents": 0, "paid_cents": 15000,
                       "outstanding_cents": 5000}
    [paid] = (await w.client.get("/funders/091/payments", headers=finance)).json()["items"]
    assert (paid["amount_cents"], paid["bank_reference"], paid["kind"]) == (15000, "ARCH-2026-0001", "funder_payment")
    for who, status in ((as_("funder_finance", funder_id="092"), 404), (as_("funder_reporting", funder_id="091"), 403),
                        (charger(p), 403)):
        assert (await w.client.get("/funders/091/account", headers=who)).status_code == status
    assert (await w.balances())["operator:bank"] == 15000
    await w.check()

    # a run pays 190.00; the payout is due until the bank executes the file
    [s] = await w.settle()
    assert s["net_cents"] == 19000
    [run] = [r for r in (await w.client.get("/settlement-runs", headers=OPERATOR)).json()["items"]
             if r["net_cents"] == 19000]
    assert run["executed_on"] is None
    assert (await w.balances())[f"provider:{p}:payout_due"] == -19000
    early = await w.client.post(f"/settlement-runs/{run['id']}/execution", headers=OPERATOR,
                                json={"executed_on": (w.clock.today() - timedelta(days=1)).isoformat()})
    assert (early.status_code, early.json()["error"]["reason"]) == (422, "executed_before_run")
    body = {"executed_on": w.clock.today().isoformat()}
    assert (await w.client.post(f"/settlement-runs/{run['id']}/execution", json=body,
                                headers=finance)).status_code == 403
    done = await w.client.post(f"/settlement-runs/{run['id']}/execution", json=body, headers=OPERATOR)
    assert done.status_code == 201, done.text
    assert (done.json()["transfers"], done.json()["net_cents"]) == (1, 19000)
    twice = await w.client.post(f"/settlement-runs/{run['id']}/execution", json=body, headers=OPERATOR)
    assert (twice.status_code, twice.json()["executed_at"]) == (200, done.json()["executed_at"])
    balances = await w.balances()
    assert (balances[f"provider:{p}:payout_due"], balances["operator:bank"]) == (0, 15000 - 19000)
    check = await w.check()
    assert check["checks"]["bank_equals_bank_transactions"] and check["checks"]["payouts_due_equal_unexecuted_payouts"]
    listed = {r["id"]: r for r in (await w.client.get("/settlement-runs", headers=OPERATOR)).json()["items"]}
    assert listed[run["id"]]["executed_on"] == body["executed_on"]

    # a run that pays nothing: no file, nothing to execute
    nothing = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    r = await w.client.post(f"/settlement-runs/{nothing['id']}/execution", json=body, headers=OPERATOR)
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "nothing_to_pay")
    r = await w.client.get(f"/settlement-runs/{nothing['id']}/payment-file", headers=OPERATOR)
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "nothing_to_pay")
    assert (await w.client.post("/settlement-runs/no-such-run/execution", json=body,
                                headers=OPERATOR)).status_code == 404
    # the rest of the funder's debt comes in: it owes nothing, the bank holds the fee
    await w.client.post("/funders/091/payments", headers=OPERATOR, json={
        "amount_cents": 5000, "booked_on": w.clock.today().isoformat(), "bank_reference": "ARCH-2026-0002"})
    assert (await w.client.get("/funders/091/account", headers=finance)).json()["outstanding_cents"] == 0
    balances = await w.balances()
    assert balances["operator:bank"] == 1000 == -balances["operator:fee_revenue"]
    await w.check()


async def test_a_correction_no_payout_offsets_is_claimed_back_by_the_daily_run_and_repaid(live, namespace, amqp_url):
    w, p = live, "prov-gone"
    await _provider(w, p)
    # the provider's own notice queue, as `seteli-broker add-provider-system` makes it (removed at the end)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    notices_exchange = await channel.declare_exchange(f"{namespace}.notices", aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
    queue = await channel.declare_queue(f"{namespace}.notices.{p}", durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(notices_exchange, f"notice.{p}.#")
    try:
        await _claimed_back_and_repaid(w, p, queue)
    finally:
        await channel.queue_delete(queue.name)
        await connection.close()


async def _claimed_back_and_repaid(w, p: str, queue) -> None:  # noqa: ANN001
    v = await w.voucher(p, 1, units="20")
    first = await w.charge(p, v, "g-1", "4")  # 100.00, fee 5.00, net 95.00
    [paid] = await w.settle()
    assert paid["net_cents"] == 9500
    rev = await w.correct(first["id"], {"reason": "service_not_delivered", "reversal": True}, charger(p))
    assert rev["net_cents"] == 9500
    # the provider charges the funder no more: the daily runs leave the correction waiting ...
    w.clock.advance(days=59)
    daily = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    assert (daily["settlements"], daily["recovery_claims"]) == ([], [])
    # ... until it is 60 days old: then it is claimed back, net of the fee given back
    w.clock.advance(days=1)
    daily = (await w.client.post("/settlement-runs", headers=OPERATOR)).json()
    [brief] = daily["recovery_claims"]
    assert (brief["funder_id"], brief["provider_id"], brief["net_cents"]) == ("091", p, 9500)
    claim = (await w.client.get(f"/recovery-claims/{brief['id']}", headers=charger(p))).json()
    assert (claim["reason"], claim["amount_cents"], claim["fee_cents"], claim["net_cents"], claim["outstanding_cents"],
            claim["correction_count"]) == ("overdue", 10000, 500, 9500, 9500, 1)
    assert [c["id"] for c in claim["corrections"]] == [rev["id"]]
    assert claim["reference"].startswith("RF") and claim["due_on"] == (w.clock.today() + timedelta(days=14)).isoformat()
    assert (await w.client.get(f"/recovery-claims/{brief['id']}", headers=charger("prov-other"))).status_code == 404
    # the provider's system is told, on its own queue, after the settlement notice of the first run

    async def notices_of_claims():  # noqa: ANN202
        while (m := await queue.get(no_ack=True, fail=False)) is not None:
            if m.routing_key == f"notice.{p}.recovery-claim":
                return m
        return None

    message = await eventually(notices_of_claims)
    assert message.type == "fi.seteli.notice.recovery-claim.v1"
    data = json.loads(message.body)["data"]
    assert (data["claim_id"], data["net_cents"], data["reference"], data["due_on"], data["claim_path"]) == (
        brief["id"], 9500, claim["reference"], claim["due_on"], f"/recovery-claims/{brief['id']}")
    assert iso11649.is_valid(data["reference"]) and data["pay_to_iban"]
    assert (await w.client.get("/recovery-claims", headers=charger("prov-other"))).json()["items"] == []
    assert [c["id"] for c in (await w.client.get("/recovery-claims?open=true", headers=as_(
        "funder_finance", funder_id="091"))).json()["items"]] == [brief["id"]]
    assert (await w.client.get("/recovery-claims", headers=as_("funder_finance", funder_id="092"))
            ).json()["items"] == []
    balances = await w.balances()
    assert (balances[f"provider:{p}:payable"], balances[f"provider:{p}:recovery_due"]) == (0, 9500)
    await w.check()
    # claimed corrections are no longer offset: a later payout is paid whole
    await w.charge(p, v, "g-2", "2")
    [later] = await w.settle()
    assert (later["gross_cents"], later["net_cents"]) == (5000, 4750)
    # the provider pays back in two parts; more than is owed is refused
    day = w.clock.today().isoformat()
    part = await w.client.post(f"/recovery-claims/{brief['id']}/repayments", headers=OPERATOR,
                               json={"amount_cents": 5000, "booked_on": day, "bank_reference": "ARCH-R-1"})
    assert part.status_code == 201, part.text
    too_much = await w.client.post(f"/recovery-claims/{brief['id']}/repayments", headers=OPERATOR,
                                   json={"amount_cents": 4501, "booked_on": day, "bank_reference": "ARCH-R-2"})
    assert (too_much.status_code, too_much.json()["error"]["reason"]) == (422, "repayment_exceeds_claim")
    assert too_much.json()["error"]["details"]["outstanding_cents"] == 4500
    assert (await w.client.post(f"/recovery-claims/{brief['id']}/repayments", headers=charger(p), json={
        "amount_cents": 4500, "booked_on": day, "bank_reference": "ARCH-R-2"})).status_code == 403
    rest = await w.client.post(f"/recovery-claims/{brief['id']}/repayments", headers=OPERATOR,
                               json={"amount_cents": 4500, "booked_on": day, "bank_reference": "ARCH-R-2"})
    assert rest.status_code == 201
    replay = await w.client.post(f"/recovery-claims/{brief['id']}/repayments", headers=OPERATOR,
                                 json={"amount_cents": 4500, "booked_on": day, "bank_reference": "ARCH-R-2"})
    assert (replay.status_code, replay.json()["id"]) == (200, rest.json()["id"]), "a statement line recorded twice"
    claim = (await w.client.get(f"/recovery-claims/{brief['id']}", headers=OPERATOR)).json()
    assert (claim["repaid_cents"], claim["outstanding_cents"]) == (9500, 0)
    assert (await w.client.get("/recovery-claims?open=true", headers=OPERATOR)).json()["items"] == []
    balances = await w.balances()
    assert (balances[f"provider:{p}:recovery_due"], balances["operator:bank"]) == (0, 9500)
    check = await w.check()
    assert check["checks"]["recoveries_due_equal_open_claims"] and check["checks"]["bank_equals_bank_transactions"]


async def test_the_funders_finance_staff_claim_back_at_once(live):
    w, p = live, "prov-claim"
    await _provider(w, p)
    v = await w.voucher(p, 1, units="20")
    finance = as_("funder_finance", funder_id="091")
    body = {"funder_id": "091", "provider_id": p}
    r = await w.client.post("/recovery-claims", json=body, headers=finance)
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "nothing_to_recover")
    first = await w.charge(p, v, "c-1", "4")
    await w.settle()
    await w.correct(first["id"], {"reason": "wrong_units", "units": "2"}, finance)  # 50.00 back, net 47.50
    for who, status in ((as_("funder_finance", funder_id="092"), 403), (charger(p), 403),
                        (as_("funder_reporting", funder_id="091"), 403)):
        assert (await w.client.post("/recovery-claims", json=body, headers=who)).status_code == status
    assert (await w.client.post("/recovery-claims", json={"provider_id": p}, headers=OPERATOR)
            ).json()["error"]["reason"] == "invalid_request"
    made = await w.client.post("/recovery-claims", json=body, headers=finance)
    assert made.status_code == 201, made.text
    assert (made.json()["reason"], made.json()["net_cents"], made.json()["fee_cents"]) == ("requested", 4750, 250)
    again = await w.client.post("/recovery-claims", json=body, headers=finance)
    assert (again.status_code, again.json()["error"]["reason"]) == (409, "nothing_to_recover"), "claimed once"
    account = (await w.client.get("/funders/091/account", headers=finance)).json()
    assert (account["charged_cents"], account["corrected_cents"], account["outstanding_cents"]) == (10000, 5000, 5000)
    await w.check()
