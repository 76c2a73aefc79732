"""Two instances of every service (and of the portal) as processes of their own on the same PostgreSQL
databases and the same queues, behind one address each (the balancer of `make scale`, a new connection per
request, so requests alternate between the instances):

- charges taken by both payments instances are published once each by their two relays, and take effect once in
  the competing consumers of vouchers and reporting, though a consumer instance is killed (``kill -9``) in the
  middle and every event is delivered a second time;
- the events of one voucher and of one charge published in the reverse order, to competing consumers, end in
  the same state as in order (the consumers are order-independent; README "Several instances");
- a scheduled job runs under its lease: the holder killed with ``kill -9`` in the middle of a run is replaced
  within the lease's bound, the run it left unfinished is run again, and no due time runs twice;
- the registry's daily check runs by itself at its time, once across its two instances;
- a portal sign-in made on one instance holds on the other (no sticky sessions).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import aio_pika
import asyncpg
import pytest

from seteli_shared.devtools import random_business_id
from seteli_shared.events import (ChargeAccepted, ChargesAccepted, ChargeSettled, Envelope, VoucherAmended, VoucherIssued,
                                  VoucherProviderChosen)
from seteli_shared.testing import delete_namespace, eventually

from .fleet import Fleet, bearer

pytestmark = pytest.mark.e2e
FUNDER = "091"
OPERATOR = bearer("operator")
APPROVER = bearer("funder_provider_approver", funder_id=FUNDER)
DECISION_MAKER = bearer("funder_decision_maker", funder_id=FUNDER)
REPORTING = bearer("funder_reporting", funder_id=FUNDER)
IBAN = "FI2112345600000785"
PRICE = 2500


@pytest.fixture(scope="module")
async def fleet(postgres_admin_dsn, amqp_url, tmp_path_factory):  # noqa: ANN001
    from conftest import PostgresDatabases  # the root conftest

    dbs = PostgresDatabases(postgres_admin_dsn)
    ns = f"inst{uuid.uuid4().hex[:8]}"
    names = ("registry", "vouchers", "payments", "reporting", "portal")
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), amqp_url, ns, {n: await dbs.create(n) for n in names})
    try:
        # payments' purge of Idempotency-Key records every second: a real job of a service, under its lease
        await fleet.start({n: 2 for n in names}, {"payments": {"IDEMPOTENCY_PURGE_INTERVAL_SECONDS": "1"}})
        fleet.world = await make_world(fleet)
        yield fleet
    finally:
        await fleet.stop()
        await dbs.drop_all()
        await delete_namespace(amqp_url, ns, [f"{ns}.{s}" for s in names] + [f"{ns}.spy"])


async def make_world(fleet: Fleet) -> dict:
    """A funder, an approved provider and a voucher (1,000 h a month at 25.00 EUR/h) the client has given it,
    made through the one addresses: each request on the next instance."""
    async with fleet.client("registry", headers=OPERATOR) as registry:
        r = await registry.post("/funders", json={"funder_id": FUNDER, "name": "Helsingin kaupunki",
                                                  "kind": "municipality"})
        assert r.status_code == 201, r.text
        r = await registry.post(f"/funders/{FUNDER}/rulebooks", headers=APPROVER, json={
            "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
        assert r.status_code == 201, r.text
        r = await registry.post("/providers", json={"business_id": random_business_id(), "name": "Kotihoiva Oy",
                                                    "iban": IBAN})
        provider_id = r.json()["id"]
        r = await registry.post(f"/providers/{provider_id}/approvals", json={"category": "home_care"},
                                headers=APPROVER)
        assert r.status_code == 201, r.text
    today = date.today()
    decision = {"funder_id": FUNDER, "decision_ref": "HKI-SCALE-1", "client_ref": "asiakas-scale-1",
                "category": "home_care", "units_per_period": "1000", "period": "month", "value_per_unit_cents": PRICE,
                "valid_from": (today - timedelta(days=60)).isoformat(),
                "valid_until": (today + timedelta(days=300)).isoformat()}
    async with fleet.client("vouchers", headers=DECISION_MAKER) as vouchers:
        async def issued():  # noqa: ANN202
            r = await vouchers.post("/vouchers", json=decision)
            return r if r.status_code == 201 else None
        voucher = (await eventually(issued, timeout=30)).json()
        login = await vouchers.post("/client-sessions", headers={"Authorization": ""}, json={
            "voucher_code": voucher["voucher_code"], "client_login_code": voucher["client_login_code"]})
        assert login.status_code == 200, login.text
        client = {"Authorization": f"Bearer {login.json()['access_token']}"}

        async def chosen():  # noqa: ANN202  (the client's token, from one instance, on the other as well)
            r = await vouchers.post(f"/vouchers/{voucher['id']}/provider", headers=client,
                                    json={"provider_id": provider_id})
            return r.status_code == 200
        await eventually(chosen, timeout=30)
    return {"provider_id": provider_id, "voucher_id": voucher["id"], "today": today}


async def spy(fleet: Fleet, *keys: str) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(fleet.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{fleet.namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
    for key in keys:
        await queue.bind(f"{fleet.namespace}.events", key)
    return connection, queue


async def drain(queue) -> list[aio_pika.abc.AbstractIncomingMessage]:  # noqa: ANN001
    got = []
    while (m := await queue.get(fail=False, no_ack=True)) is not None:
        got.append(m)
    return got


async def publish(fleet: Fleet, envelopes: list[Envelope]) -> None:
    """Events onto the namespace's exchange as a service's relay publishes them (persistent, confirmed)."""
    connection = await aio_pika.connect(fleet.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{fleet.namespace}.events")
        for env in envelopes:
            await exchange.publish(aio_pika.Message(env.model_dump_json().encode(), message_id=env.id, type=env.type,
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   env.routing_key, timeout=10)
    finally:
        await connection.close()


async def sql(url: str, query: str, *args) -> list:  # noqa: ANN002
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def figures(fleet: Fleet) -> dict:
    async with fleet.client("reporting", headers=REPORTING) as reporting:
        r = await reporting.get(f"/funders/{FUNDER}/figures")
        assert r.status_code == 200, r.text
        return r.json()


async def test_the_registrys_daily_check_runs_by_itself_once_across_two_instances(
        postgres_admin_dsn, amqp_url, tmp_path):  # noqa: ANN001
    """Two registry instances with the check due two minutes from their start (before the others of this module
    start: a due time that passes while the instances are still starting would be tomorrow's): at its time the
    unregistered provider's approval is suspended (``not_in_prepayment_register``) by one of them, once; the fit
    one stays."""
    from conftest import PostgresDatabases

    dbs = PostgresDatabases(postgres_admin_dsn)
    ns = f"chk{uuid.uuid4().hex[:8]}"
    due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=120)
    fleet = Fleet(tmp_path, amqp_url, ns, {"registry": await dbs.create("registry")})
    try:
        await fleet.start({"registry": 2}, {"registry": {"DAILY_CHECK_SCHEDULER": "true",
                                                         "DAILY_CHECK_AT": due.strftime("%H:%M:%S")}})
        assert datetime.now(timezone.utc) < due - timedelta(seconds=10), "started too slowly to set up in time"
        approvals = {}
        async with fleet.client("registry", headers=OPERATOR) as registry:
            assert (await registry.post("/funders", json={"funder_id": FUNDER, "name": "Kunta",
                                                          "kind": "municipality"})).status_code == 201
            assert (await registry.post(f"/funders/{FUNDER}/rulebooks", headers=APPROVER, json={
                "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoito"})).status_code == 201
            for name, registered in (("fit", True), ("unregistered", False)):
                p = (await registry.post("/providers", json={"business_id": random_business_id(), "name": "Hoiva Oy",
                                                             "iban": IBAN})).json()["id"]
                r = await registry.patch(f"/providers/{p}", json=fit_provider(registered))
                assert r.status_code == 200, r.text
                r = await registry.post(f"/providers/{p}/approvals", json={"category": "home_care"}, headers=APPROVER)
                approvals[name] = (p, r.json()["id"])
            jobs = await health_jobs(fleet, "registry")
            assert jobs["registry.daily_check"]["last_run"] is None, "nothing ran before its time"
            assert jobs["registry.daily_check"]["schedule"] == f"daily {due.strftime('%H:%M:%S')} UTC"
            await asyncio.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))

            async def suspended() -> bool:
                p = (await registry.get(f"/providers/{approvals['unregistered'][0]}")).json()
                return p["approvals"][0]["status"] == "suspended"
            await eventually(suspended, timeout=30)
            fit = (await registry.get(f"/providers/{approvals['fit'][0]}")).json()
            assert fit["approvals"][0]["status"] == "active"
            trail = (await registry.get("/audit", params={"limit": 500})).json()["items"]
            suspensions = [e for e in trail if e["action"] == "approval.suspend"]
            assert [(e["actor"], e["resource_id"]) for e in suspensions] == [
                ("job:registry.daily_check", approvals["unregistered"][1])]
            jobs = await health_jobs(fleet, "registry")
        run = jobs["registry.daily_check"]["last_run"]
        assert (run["outcome"], run["detail"]) == ("ok", "1 items")
        ran = [inst.label for inst, line in fleet.lines("registry")
               if line.get("event") == "job.ran" and line.get("job") == "registry.daily_check"]
        assert len(ran) == 1, f"the check ran once across the instances, not {ran}"
    finally:
        await fleet.stop()
        await dbs.drop_all()
        await delete_namespace(amqp_url, ns, [])


def fit_provider(prepayment_registered: bool) -> dict:
    until = (date.today() + timedelta(days=365)).isoformat()
    return {"prepayment_registered": prepayment_registered, "prepayment_checked_on": date.today().isoformat(),
            "liability_insurance": {"insurer": "Vakuutus Oy", "policy_number": "VA-1", "valid_until": until},
            "patient_insurance": {"insurer": "Potilasvakuutus Oy", "policy_number": "PV-1", "valid_until": until},
            "service_units": [{"name": "Hoiva", "street_address": "Katu 1", "postal_code": "00530",
                               "municipality_code": "091"}]}


async def test_charges_through_two_instances_take_effect_once_though_a_consumer_dies_and_all_come_twice(
        fleet):  # noqa: ANN001
    w, m = fleet.world, 120
    before = await figures(fleet)
    connection, queue = await spy(fleet, ChargeAccepted.routing_key(), ChargesAccepted.routing_key())
    charger = bearer("provider_charger", provider_id=w["provider_id"])
    killed = [fleet.instances["reporting"][0], fleet.instances["vouchers"][0]]
    try:
        async with fleet.client("payments", headers=charger) as payments:
            async def charge(i: int) -> str:
                for _ in range(100):  # until payments has heard of the client's choice (an event: eventually)
                    r = await payments.post("/charges", json={
                        "voucher_id": w["voucher_id"], "provider_reference": f"scale-{i}", "units": "1",
                        "service_date": w["today"].isoformat(), "unit_price_cents": PRICE})
                    if not (r.status_code == 422 and r.json()["error"]["reason"] == "provider_not_chosen"):
                        break
                    await asyncio.sleep(0.1)
                assert r.status_code == 201, r.text
                return r.json()["id"]

            ids: list[str] = []
            for start in range(0, m, 8):
                if start == 40:  # a consumer instance of each dies in the middle: what it had is redelivered
                    for inst in killed:
                        fleet.kill(inst)
                ids += await asyncio.gather(*(charge(i) for i in range(start, min(start + 8, m))))
        assert len(set(ids)) == m
        assert all(n > 0 for n in fleet.handed("payments").values()), "both payments instances took charges"

        published: list = []

        def charges_in(messages: list) -> list[str]:
            """The charge ids the messages announce (a relay publishes single charges' acceptances that it reads
            together as one ``charge.accepted.v2``)."""
            data = [json.loads(msg.body)["data"] for msg in messages]
            return [c["charge_id"] for d in data for c in d.get("charges", [d])]

        async def all_published() -> bool:
            published.extend(await drain(queue))
            return len(charges_in(published)) >= m
        await eventually(all_published, timeout=60)
        await asyncio.sleep(1.0)
        published.extend(await drain(queue))
        charge_ids = charges_in(published)
        assert sorted(charge_ids) == sorted(ids), "the two relays published every charge exactly once"
        assert (await sql(fleet.databases["payments"], "SELECT count(*) FROM outbox WHERE sent_at IS NULL"))[0][0] == 0

        # every event a second time, as from a relay that died after publishing, before marking its rows sent
        await publish(fleet, [Envelope.model_validate_json(msg.body) for msg in published])
        for inst in killed:
            await fleet.restart(inst)

        async def folded() -> dict | None:
            f = await figures(fleet)
            return f if f["charges_accepted"] >= before["charges_accepted"] + m else None
        after = await eventually(folded, timeout=90)
        await asyncio.sleep(2.0)  # the duplicates have arrived by now (published before the restart)
        after = await figures(fleet)
        assert after["charges_accepted"] - before["charges_accepted"] == m, "each charge once in reporting"
        assert after["charged_cents"] - before["charged_cents"] == m * PRICE
        async with fleet.client("vouchers", headers=DECISION_MAKER) as vouchers:
            async def used() -> float:
                return float((await vouchers.get(f"/vouchers/{w['voucher_id']}")).json()["usage"]["units_used"])
            await eventually(lambda: _at_least(used(), m), timeout=30)
            assert await used() == m, "each charge once in the vouchers service's usage"
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()


async def _at_least(value, wanted: float) -> bool:  # noqa: ANN001
    return await value >= wanted


async def test_a_vouchers_and_a_charges_events_in_reverse_order_end_as_in_order(fleet):  # noqa: ANN001
    """What a competing consumer may see: the later events of an aggregate first. Payments' projection of the
    voucher and reporting's fold of the charge end as if the events had come in order."""
    w = fleet.world
    voucher_id, charge_id, today = f"v-{uuid.uuid4().hex[:12]}", f"c-{uuid.uuid4().hex[:12]}", w["today"]
    now = datetime.now(timezone.utc)
    terms = dict(voucher_id=voucher_id, funder_id=FUNDER, category="home_care", period="month",
                 value_per_unit_cents=PRICE, valid_from=today - timedelta(days=30),
                 valid_until=today + timedelta(days=30))
    in_order = [
        VoucherIssued(**terms, client_ref="asiakas-rev", decision_ref="REV-1", unit="hour",
                      units_per_period=20, issued_at=now),
        VoucherAmended(**terms, decision_ref="REV-1", decision_version=2, units_per_period=5, amended_at=now),
        VoucherProviderChosen(voucher_id=voucher_id, funder_id=FUNDER, provider_id=w["provider_id"],
                              category="home_care", chosen_at=now),
        ChargeAccepted(charge_id=charge_id, voucher_id=voucher_id, funder_id=FUNDER, provider_id=w["provider_id"],
                       category="home_care", service_date=today, units=3, unit_price_cents=1000, amount_cents=3000,
                       own_share_cents=0, accepted_at=now),
        ChargeSettled(charge_id=charge_id, settlement_id="s-rev", voucher_id=voucher_id, funder_id=FUNDER,
                      provider_id=w["provider_id"], category="home_care", gross_cents=3000, fee_cents=150,
                      net_cents=2850, settled_at=now + timedelta(seconds=1)),
    ]
    before = await figures(fleet)
    await publish(fleet, [Envelope.wrap(e, "payments" if e.producer == "payments" else "vouchers")
                          for e in reversed(in_order)])

    async def projected() -> bool:
        rows = await sql(fleet.databases["payments"], "SELECT issued, decision_version, provider_id FROM "
                         "payments_voucher WHERE voucher_id = $1", voucher_id)
        return bool(rows) and tuple(rows[0]) == (True, 2, w["provider_id"])
    await eventually(projected, timeout=30)
    charger = bearer("provider_charger", provider_id=w["provider_id"])
    async with fleet.client("payments", headers=charger) as payments:
        charge = {"voucher_id": voucher_id, "service_date": today.isoformat(), "unit_price_cents": PRICE}
        over = await payments.post("/charges", json={**charge, "provider_reference": "rev-1", "units": "6"})
        assert (over.status_code, over.json()["error"]["reason"]) == (422, "units_exceeded"), over.text
        assert over.json()["error"]["details"]["units_left"] == "5.00", "the amendment's 5 h, not the issue's 20 h"
        assert (await payments.post("/charges", json={**charge, "provider_reference": "rev-2",
                                                      "units": "5"})).status_code == 201

    async def folded() -> dict | None:
        f = await figures(fleet)
        return f if f["charges_settled"] > before["charges_settled"] else None
    after = await eventually(folded, timeout=30)
    assert (after["charges_settled"] - before["charges_settled"],
            after["settled_gross_cents"] - before["settled_gross_cents"]) == (1, 3000)
    assert after["charged_cents"] - before["charged_cents"] >= 3000, "the settled charge's acceptance counts too"


async def health_jobs(fleet: Fleet, service: str) -> dict:
    async with fleet.client(service, headers=OPERATOR) as c:
        r = await c.get("/health/jobs")
        assert r.status_code == 200, r.text
        return {j["name"]: j for j in r.json()["jobs"]}


async def test_a_job_holder_killed_in_the_middle_of_a_run_is_replaced_within_the_lease(fleet):  # noqa: ANN001
    """The purge (every second, JOB_LEASE_SECONDS=2) is held up by a lock on its table, so its holder is in the
    middle of a run when ``kill -9`` ends it; another instance takes the job over once the lease has run out,
    runs the unfinished run again, and no due time is run twice."""
    job = "payments.idempotency_purge"
    first = await eventually(lambda: _held(fleet, job), timeout=30)
    db = await asyncpg.connect(fleet.databases["payments"].replace("postgresql+asyncpg", "postgresql"))
    try:
        lock = db.transaction()
        await lock.start()
        await db.execute("LOCK TABLE payments_idempotency IN ACCESS EXCLUSIVE MODE")

        async def stuck() -> dict | None:
            j = (await health_jobs(fleet, "payments"))[job]
            return j if (j["last_run"] or {}).get("outcome") == "running" and j["holder"] else None
        running = await eventually(stuck, timeout=30)
        holder = fleet.find("payments", int(running["holder"].split(":")[1]))
        fleet.kill(holder)
        killed_at = time.monotonic()

        async def replaced() -> dict | None:
            # taking the lease and claiming the unfinished run are two statements (JobRunner._hold, then _claim):
            # wait for both, else a look between them sees the new holder beside the old run's row
            j = (await health_jobs(fleet, "payments"))[job]
            return j if (j["holder"] and j["holder"] != running["holder"]
                         and (j["last_run"] or {}).get("detail") == "taken over") else None
        taken = await eventually(replaced, timeout=30, interval=0.1)
        took = time.monotonic() - killed_at
        bound = 2 + 2 / 3  # JOB_LEASE_SECONDS and a third of it
        print(f"\njob lease taken over {took:.2f} s after kill -9 of its holder (bound {bound:.2f} s + polling)")
        assert took < bound + 3.0, f"taken over after {took:.1f} s"
        assert taken["last_run"]["outcome"] == "running" and taken["last_run"]["detail"] == "taken over"
        await lock.rollback()
    finally:
        await db.close()

    async def finished() -> dict | None:
        j = (await health_jobs(fleet, "payments"))[job]
        return j if (j["last_run"] or {}).get("outcome") == "ok" else None
    await eventually(finished, timeout=30)
    ran = [(inst.label, line["due_at"]) for inst, line in fleet.lines("payments")
           if line.get("event") == "job.ran" and line.get("job") == job]
    dues = [d for _, d in ran]
    assert len(dues) == len(set(dues)), f"a due time ran twice: {sorted(ran, key=lambda r: r[1])}"
    assert any(line.get("taken_over") for inst, line in fleet.lines("payments")
               if line.get("event") == "job.ran" and line.get("job") == job), "the unfinished run was run again"
    assert first  # held before, by some instance
    await fleet.restart(holder)


async def _held(fleet: Fleet, job: str) -> dict | None:
    j = (await health_jobs(fleet, "payments")).get(job)
    return j if j and j["holder"] and j["last_run"] else None


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def test_a_portal_sign_in_on_one_instance_holds_on_the_other(fleet):  # noqa: ANN001
    """No sticky sessions: each request on a new connection, so on the other portal instance than the one
    before; the sign-in form's CSRF token, the session and the sign-out all hold across them."""
    before = fleet.handed("portal")
    async with fleet.client("portal", follow_redirects=False) as portal:
        form = await portal.get("/signin")
        csrf = CSRF.search(form.text).group(1)
        r = await portal.post("/signin/dev", data={"csrf": csrf, "role": "funder_reporting", "funder_id": FUNDER})
        assert r.status_code == 303, r.text
        pages = [await portal.get("/funder") for _ in range(4)]
        assert [p.status_code for p in pages] == [200] * 4, "signed in on both instances"
        csrf = CSRF.search(pages[-1].text).group(1)
        assert (await portal.post("/signout", data={"csrf": csrf})).status_code == 303
        after_signout = [await portal.get("/funder") for _ in range(2)]
        assert all(p.status_code == 303 for p in after_signout), "signed out on both instances"
    served = {port: n - before.get(port, 0) for port, n in fleet.handed("portal").items()}
    assert len(served) == 2 and all(n >= 4 for n in served.values()), served

