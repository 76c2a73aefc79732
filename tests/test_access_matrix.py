"""Every endpoint of every service against a matrix of callers, generated from the apps' routes:
a new endpoint without a declared access policy fails here.

The four apps run in this process (SQLite files) on a bus namespace of their own on the real
RabbitMQ; the resources the matrix calls for are made through the APIs and the events between them.
"""
from __future__ import annotations

import importlib
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest
from fastapi.routing import APIRoute

from seteli_shared import ids as id_draws
from seteli_shared.auth import FUNDER_ROLES, PROVIDER_ROLES, Policy, Require, Role, mint
from seteli_shared.clock import FixedClock
from seteli_shared.devtools import random_business_id
from seteli_shared.manifest import NAMES
from seteli_shared.testing import eventually

PUBLIC = {("GET", "/health/live"), ("GET", "/health/ready"), ("POST", "/client-sessions"),
          # the registry's catalogue and the funders' rulebooks are public
          ("GET", "/categories"), ("GET", "/funders/{funder_id}/rulebooks"),
          ("GET", "/funders/{funder_id}/rulebooks/{category}/{rulebook_version}"),
          # the public comparison of a funder's providers (no login)
          ("GET", "/public/funders/{funder_id}/categories/{category}/providers"),
          # an approved provider's public page and the funders with their categories (no login)
          ("GET", "/public/providers/{provider_id}"), ("GET", "/public/funders")}
F1, F2 = "091", "092"
IBAN = "FI2112345600000785"



def _ref(prefix: str, n: int) -> str:
    """``prefix`` and n random hex digits, drawn again when the whole would hold a personal identity code (once in a
    few thousand: hex digits are digits and ``A``-``F`` century signs), which the services refuse before anything
    else (a 422 where the matrix expects its answer)."""
    return id_draws.clean(lambda: f"{prefix}{uuid.uuid4().hex[:n]}")

def token(role: str, **claims) -> str:  # noqa: ANN003
    return mint(f"matrix:{role}", [role], **claims)


@dataclass(frozen=True)
class Endpoint:
    path: str
    dependant: object


def endpoints(app) -> list[tuple[str, Endpoint]]:  # noqa: ANN001
    """(method, endpoint) for every API route, through included routers."""
    out = []
    for r in app.routes:
        if isinstance(r, APIRoute):
            candidates = [r]
        elif hasattr(r, "effective_candidates"):  # an included router (FastAPI >= 0.160)
            found = r.effective_candidates
            candidates = list(found() if callable(found) else found)
        else:
            candidates = []
        for c in candidates:
            out += [(m, Endpoint(c.path, c.dependant)) for m in c.methods]
    return out


def policy_of(route: Endpoint) -> Policy | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Require):
            return dep.call.policy
        stack.extend(dep.dependencies)
    return None


#: what a service needs here beyond the common settings: payments takes a webhook on this machine (plain http to
#: loopback: the development settings) whose port nobody listens on
EXTRA_SETTINGS = {"payments": {"webhook_allow_http": True, "webhook_allow_loopback": True}}
WEBHOOK_URL = "http://127.0.0.1:9/seteli/notices"


async def start_system(stack: AsyncExitStack, tmp_path, namespace: str, amqp_url: str) -> dict:  # noqa: ANN001
    clients = {}
    for name in NAMES:
        app_module = importlib.import_module(f"{name}.app")
        settings_cls = getattr(importlib.import_module(f"{name}.settings"), f"{name.capitalize()}Settings")
        settings = settings_cls(environment="test", database_url=f"sqlite+aiosqlite:///{tmp_path / name}.db",
                                bus_namespace=namespace, amqp_url=amqp_url, relay_idle_seconds=0.05,
                                **EXTRA_SETTINGS.get(name, {}))
        app = app_module.create_app(settings)
        await stack.enter_async_context(app.router.lifespan_context(app))
        clients[name] = (app, await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")))
    return clients


@dataclass
class World:
    clients: dict
    ids: dict


@pytest.fixture(scope="module")
async def world(tmp_path_factory, amqp_url):  # noqa: ANN001
    from seteli_shared.testing import delete_namespace

    ns = _ref("mx", 8)
    async with AsyncExitStack() as stack:
        clients = await start_system(stack, tmp_path_factory.mktemp("matrix"), ns, amqp_url)
        reg, vou, pay = clients["registry"][1], clients["vouchers"][1], clients["payments"][1]
        op = {"Authorization": f"Bearer {token('operator')}"}
        ids: dict = {}
        for funder in (F1, F2):
            r = await reg.post("/funders", headers=op, json={"funder_id": funder, "name": f"Kunta {funder}",
                                                             "kind": "municipality"})
            assert r.status_code == 201, r.text
            r = await reg.post(f"/funders/{funder}/rulebooks", headers=op, json={  # a funder approves for its rulebooks'
                "category": "home_care", "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
            assert r.status_code == 201, r.text
        r = await reg.post(f"/funders/{F1}/rulebooks", headers=op, json={
            "category": "cleaning", "rulebook_version": "2026.1", "title": "Siivous"})
        assert r.status_code == 201, r.text
        for key, funder in (("P", F1), ("Q", F2)):
            r = await reg.post("/providers", headers=op, json={"business_id": random_business_id(), "name": key,
                                                               "iban": IBAN})
            ids[key] = r.json()["id"]
            r = await reg.patch(f"/providers/{ids[key]}", headers=op, json=PROVIDER_DATA)  # fit: the daily check
            assert r.status_code == 200, r.text  # suspends nothing of the world's
            # fit (insured, in the prepayment register): the daily check the matrix runs suspends no approval
            insurance = {"insurer": "Vakuutus Oy", "policy_number": "V-1",
                         "valid_until": (date.today() + timedelta(days=400)).isoformat()}
            r = await reg.patch(f"/providers/{ids[key]}", headers=op, json={
                "prepayment_registered": True, "prepayment_checked_on": date.today().isoformat(),
                "liability_insurance": insurance, "patient_insurance": insurance})
            assert r.status_code == 200, r.text
            r = await reg.post(f"/providers/{ids[key]}/approvals", headers=op,
                               json={"funder_id": funder, "category": "home_care"})
            assert r.status_code == 201, r.text
        # an approval of its own for suspension, reinstatement and revocation (the vouchers use home_care)
        r = await reg.post(f"/providers/{ids['P']}/approvals", headers=op, json={"funder_id": F1, "category": "cleaning"})
        ids["A"] = r.json()["id"]
        ids["APP"] = await new_application(reg, ids)
        # price changes F1 approves: a category of their own, so that the vouchers' home care is untouched
        r = await reg.post(f"/funders/{F1}/rulebooks", headers=op, json={
            "category": "family_work", "rulebook_version": "2026.1", "title": "Perhetyö",
            "price_changes_need_approval": True})
        assert r.status_code == 201, r.text
        r = await reg.post(f"/providers/{ids['P']}/approvals", headers=op, json={"funder_id": F1,
                                                                                 "category": "family_work"})
        assert r.status_code == 201, r.text
        for key, funder, provider in (("V", F1, "P"), ("W", F2, "Q")):
            dm = {"Authorization": f"Bearer {token('funder_decision_maker', funder_id=funder)}"}
            # vouchers learns of the funder from the bus
            r = await eventually(lambda: _ok(vou.post("/vouchers", headers=dm, json=voucher_body(funder))))
            ids[key] = r.json()["id"]
            await eventually(lambda: _ok(vou.post(f"/vouchers/{ids[key]}/provider", headers=dm,
                                                  json={"provider_id": ids[provider]})))
        # a value table of F1's for income-related vouchers (vouchers knows F1 by now)
        r = await vou.post(f"/funders/{F1}/value-tables", headers=op, json=VALUE_TABLE)
        assert r.status_code == 201, r.text
        charger = {"Authorization": f"Bearer {token('provider_charger', provider_id=ids['P'])}"}
        r = await eventually(lambda: _ok(pay.post("/charges", headers=charger, json=charge_body(ids))))
        ids["C"] = r.json()["id"]
        r = await pay.post("/settlements/run", headers=op)
        ids["S"] = r.json()[0]["id"]
        ids["R"] = (await pay.get("/settlement-runs", headers=op)).json()["items"][0]["id"]  # that run's payment file
        # a recovery claim of P's (a correction of a settled charge claimed back at once)
        await new_pending_correction(pay, ids)
        r = await pay.post("/recovery-claims", headers=op, json={"funder_id": F1, "provider_id": ids["P"]})
        assert r.status_code == 201, r.text
        ids["RC"] = r.json()["id"]
        # F1's invoice for this month, issued as on the first day of the next (a retry of the issue answers it)
        app = clients["payments"][0]
        clock, today = app.state.clock, date.today()
        app.state.clock = FixedClock(datetime(today.year + today.month // 12, today.month % 12 + 1, 1, 8,
                                              tzinfo=timezone.utc))
        r = await pay.post("/funder-invoices", headers=op, json={"funder_id": F1, "month": today.strftime("%Y-%m")})
        app.state.clock = clock
        assert r.status_code == 201, r.text
        ids["INV"] = r.json()["id"]
        yield World(clients, ids)
    await delete_namespace(amqp_url, ns, [f"{ns}.{s}" for s in NAMES])


async def _ok(coro):  # noqa: ANN001, ANN202
    r = await coro
    return r if r.status_code in (200, 201) else None


def voucher_body(funder: str) -> dict:
    return {"funder_id": funder, "decision_ref": _ref("D-", 12), "client_ref": _ref("c-", 8),
            "category": "home_care", "units_per_period": "100", "value_per_unit_cents": 2500,
            "valid_from": (date.today() - timedelta(days=30)).isoformat(),
            "valid_until": (date.today() + timedelta(days=400)).isoformat()}


def charge_body(ids: dict) -> dict:
    return {"voucher_id": ids["V"], "provider_id": ids["P"], "provider_reference": _ref("r-", 12),
            "service_date": date.today().isoformat(), "units": "0.25"}


PROVIDER_DATA = {
    "prepayment_registered": True, "prepayment_checked_on": date.today().isoformat(),
    "liability_insurance": {"insurer": "Vakuutus Oy", "policy_number": "L-1",
                            "valid_until": (date.today() + timedelta(days=800)).isoformat()},
    "patient_insurance": {"insurer": "Vakuutus Oy", "policy_number": "P-1",
                          "valid_until": (date.today() + timedelta(days=800)).isoformat()},
    "service_units": [{"name": "Yksikkö", "street_address": "Katu 1", "postal_code": "00100", "municipality_code": "091"}],
}
OPERATOR = {"Authorization": f"Bearer {token('operator')}"}


async def new_application(reg, ids: dict, submitted: bool = False) -> str:  # noqa: ANN001
    """An application of provider P to funder F1 (a draft, or submitted)."""
    r = await reg.post(f"/providers/{ids['P']}/applications", headers=OPERATOR,
                       json={"funder_id": F1, "categories": ["home_care"]})
    assert r.status_code in (200, 201), r.text
    if submitted:
        s = await reg.post(f"/applications/{r.json()['id']}/submit", headers=OPERATOR)
        assert s.status_code == 200, s.text
    return r.json()["id"]


async def new_pending_price_list(reg, ids: dict) -> str:  # noqa: ANN001
    """A price list of provider P that funder F1 has still to approve."""
    r = await reg.post(f"/providers/{ids['P']}/price-lists", headers=OPERATOR, json={
        "funder_id": F1, "category": "family_work", "unit_price_cents": 3000, "effective_from": date.today().isoformat()})
    assert r.status_code == 201 and r.json()["status"] == "pending_approval", r.text
    return r.json()["id"]


async def new_charge(pay, ids: dict) -> str:  # noqa: ANN001
    """An unsettled charge of provider P's (one to cancel)."""
    charger = {"Authorization": f"Bearer {token('provider_charger', provider_id=ids['P'])}"}
    r = await pay.post("/charges", headers=charger, json=charge_body(ids))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def new_settled_charge(pay, ids: dict) -> str:  # noqa: ANN001
    """A settled charge of provider P's (one to correct)."""
    charge_id = await new_charge(pay, ids)
    r = await pay.post("/settlements/run", headers=OPERATOR)
    assert r.status_code == 200, r.text
    return charge_id


async def new_pending_correction(pay, ids: dict) -> str:  # noqa: ANN001
    """A correction of a settled charge of provider P's that no settlement has offset (one to claim back)."""
    charge_id = await new_settled_charge(pay, ids)
    r = await pay.post(f"/charges/{charge_id}/corrections", headers=_h(token("funder_finance", funder_id=F1)),
                       json={"reason": "wrong_units", "units": "0.1"})
    assert r.status_code == 201, r.text
    return charge_id


async def new_dead_letter(client, ids: dict) -> str:  # noqa: ANN001
    """A dead letter on the service's consumer queue's dead-letter queue (one to show, replay or discard)."""
    import aio_pika

    runtime = client._transport.app.state.runtime
    queue = runtime.consumer.name if runtime.consumer else runtime.extra_consumers[0].name
    message_id = _ref("matrix-", 12)
    channel = await runtime.bus.connection.channel()
    try:
        await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id=message_id, headers={
            "x-seteli-reason": "bad_envelope: matrix", "x-seteli-consumer": queue}), routing_key=f"{queue}.dlq")
    finally:
        await channel.close()
    return message_id


async def new_parked_notice(client, ids: dict) -> str:  # noqa: ANN001
    """A parked settlement notice (one to show, retry or discard): a copy of the world's notice to P, under an id
    of its own, in payments' outbox as the relay leaves a notice nobody's queue took."""
    import json
    from datetime import datetime, timezone

    from sqlalchemy import insert, select

    from seteli_shared.messaging import OutboxMessage
    from seteli_shared.outbox import PARKED_MARK, PARKED_UNTIL

    table = OutboxMessage.__table__
    message_id = _ref("matrix-", 12)
    async with client._transport.app.state.runtime.sessions() as session, session.begin():
        row = (await session.execute(select(table.c.routing_key, table.c.body).where(
            table.c.routing_key.startswith(f"notices/notice.{ids['P']}.")).limit(1))).one()
        body = {**json.loads(row.body), "id": message_id}
        await session.execute(insert(table).values(
            message_id=message_id, routing_key=row.routing_key, body=json.dumps(body),
            created_at=datetime.now(timezone.utc), attempts=1, next_attempt_at=PARKED_UNTIL,
            last_error=f"{PARKED_MARK}matrix"))
    return message_id


async def new_long_job(client, ids: dict) -> str:  # noqa: ANN001
    """A long job's progress row in the service (one to read)."""
    from seteli_shared import progress

    async with progress.track(client._transport.app.state.runtime.sessions, "matrix",
                              job_id=_ref("matrix-", 12)) as job:
        await job.advance(1)
    return job.id


#: routes that take their resource from one state to another: each call gets a fresh one
FRESH = {
    ("GET", "/jobs/{job_id}"): new_long_job,
    ("GET", "/notices/parked/{notice_id}"): new_parked_notice,
    ("POST", "/notices/parked/{notice_id}/retry"): new_parked_notice,
    ("POST", "/notices/parked/{notice_id}/discard"): new_parked_notice,
    ("GET", "/ops/dead-letters/{message_id}"): new_dead_letter,
    ("POST", "/ops/dead-letters/{message_id}/replay"): new_dead_letter,
    ("POST", "/ops/dead-letters/{message_id}/discard"): new_dead_letter,
    ("POST", "/charges/{charge_id}/cancel"): new_charge,
    ("POST", "/charges/{charge_id}/corrections"): new_settled_charge,
    ("POST", "/recovery-claims"): new_pending_correction,
    ("POST", "/price-lists/{price_list_id}/approve"): new_pending_price_list,
    ("POST", "/price-lists/{price_list_id}/reject"): new_pending_price_list,
    ("POST", "/applications/{application_id}/submit"): lambda reg, ids: new_application(reg, ids),
    ("POST", "/applications/{application_id}/approve"): lambda reg, ids: new_application(reg, ids, True),
    ("POST", "/applications/{application_id}/reject"): lambda reg, ids: new_application(reg, ids, True),
    ("POST", "/applications/{application_id}/request-info"): lambda reg, ids: new_application(reg, ids, True),
}
VALUE_TABLE = {"category": "home_care", "table_version": "2026.1", "max_value_per_unit_cents": 3200,
               "min_value_per_unit_cents": 700,
               "income_limits_cents": [56300, 103900, 162800, 201400, 243800, 279900],
               "percentages": ["35", "22", "18", "15", "13", "11"], "extra_person_limit_cents": 34200,
               "extra_person_points": "1"}
BODIES = {
    # a selection of dead letters that takes none
    ("POST", "/ops/dead-letters/replay"): lambda ids: {"type": "seteli.matrix.none.v1"},
    ("POST", "/ops/dead-letters/discard"): lambda ids: {"type": "seteli.matrix.none.v1"},
    # a client's feedback on its own voucher (given again: the same feedback, 200)
    ("POST", "/feedback"): lambda ids: {"rating": 4},
    # the same value table version as the world's: a retry, 200
    ("POST", "/funders/{funder_id}/value-tables"): lambda ids: VALUE_TABLE,
    ("POST", "/funders/{funder_id}/value-tables/{category}/{table_version}/calculate"): lambda ids: {
        "household_size": 2, "gross_monthly_income_cents": 150000, "units_per_month": "20"},
    # the same registration as the world's: a retry, 200
    ("POST", "/funders"): lambda ids: {"funder_id": F1, "name": f"Kunta {F1}", "kind": "municipality"},
    ("POST", "/providers"): lambda ids: {"business_id": random_business_id(), "name": "New Oy", "iban": IBAN},
    ("POST", "/providers/{provider_id}/approvals"): lambda ids: {"funder_id": F1, "category": "home_care"},
    ("POST", "/vouchers"): lambda ids: voucher_body(F1),
    ("POST", "/vouchers/{voucher_id}/provider"): lambda ids: {"provider_id": ids["P"]},
    ("POST", "/charges"): charge_body,
    # a bulk of one line (a provider other than the voucher's gets the line refused, the bulk answered)
    ("POST", "/charges/bulk"): lambda ids: [{k: v for k, v in charge_body(ids).items() if k != "provider_id"}],
    ("POST", "/charges/{charge_id}/corrections"): lambda ids: {"reason": "wrong_units", "units": "0.1"},
    # the bank side: the world's run executed (again: 200), a statement line of its own per call
    ("POST", "/settlement-runs/{run_id}/execution"): lambda ids: {"executed_on": date.today().isoformat()},
    ("POST", "/funders/{funder_id}/payments"): lambda ids: {
        "amount_cents": 100, "booked_on": date.today().isoformat(), "bank_reference": _ref("M-", 12)},
    ("POST", "/recovery-claims"): lambda ids: {"funder_id": F1, "provider_id": ids["P"]},
    ("POST", "/recovery-claims/{claim_id}/repayments"): lambda ids: {
        "amount_cents": 1, "booked_on": date.today().isoformat(), "bank_reference": _ref("M-", 12)},
    ("POST", "/providers/{provider_id}/price-lists"): lambda ids: {
        "funder_id": F1, "category": "home_care", "unit_price_cents": 2500, "effective_from": date.today().isoformat()},
    # the same version as the world's: a retry, 200
    ("POST", "/funders/{funder_id}/rulebooks"): lambda ids: {
        "category": "cleaning", "rulebook_version": "2026.1", "title": "Siivous"},
    ("PATCH", "/providers/{provider_id}"): lambda ids: {"languages": ["fi", "sv"]},
    # the terms the world's funders have: nothing changes, 200
    ("PATCH", "/funders/{funder_id}"): lambda ids: {"charge_deadline_days": 90},
    ("PUT", "/providers/{provider_id}/webhook"): lambda ids: {"url": WEBHOOK_URL},
    # the world's invoice issued again (a retry: it, 200); credited (then its credit note, 200)
    ("POST", "/funder-invoices"): lambda ids: {"funder_id": F1, "month": date.today().strftime("%Y-%m")},
    ("POST", "/funder-invoices/{invoice_id}/credit-note"): lambda ids: {"reason": "wrong_amount"},
    ("POST", "/providers/{provider_id}/applications"): lambda ids: {"funder_id": F1, "categories": ["home_care"]},
    ("POST", "/applications/{application_id}/reject"): lambda ids: {"reason": "incomplete",
                                                                     "grounds": "Vakuutustodistus puuttuu."},
    ("POST", "/price-lists/{price_list_id}/reject"): lambda ids: {"grounds": "Hinta ylittää enimmäishinnan."},
    ("POST", "/applications/{application_id}/request-info"): lambda ids: {"message": "Lisätietoja"},
    # the same suspension (revocation) again changes nothing: 200
    ("POST", "/approvals/{approval_id}/suspend"): lambda ids: {"reason": "funder_decision",
                                                               "effective_from": date.today().isoformat(),
                                                               "grounds": "Valvontakäynnin havainnot."},
    ("POST", "/approvals/{approval_id}/revoke"): lambda ids: {"reason": "funder_decision",
                                                              "effective_from": date.today().isoformat(),
                                                              "grounds": "Valvontakäynnin havainnot."},
}
PATH_IDS = {"invoice_id": "INV", "claim_id": "RC", "run_id": "R", "provider_id": "P", "voucher_id": "V", "charge_id": "C", "settlement_id": "S", "application_id": "APP",
            "approval_id": "A"}


@dataclass(frozen=True)
class Caller:
    label: str
    headers: dict
    roles: frozenset
    relation: str  # right | other | bad


def callers(ids: dict) -> list[Caller]:
    out = [Caller("operator", _h(token("operator")), frozenset({Role.OPERATOR}), "right")]
    for role in sorted(FUNDER_ROLES):
        out.append(Caller(f"{role}@{F1}", _h(token(role, funder_id=F1)), frozenset({role}), "right"))
        out.append(Caller(f"{role}@{F2}", _h(token(role, funder_id=F2)), frozenset({role}), "other"))
    for role in sorted(PROVIDER_ROLES):
        out.append(Caller(f"{role}@P", _h(token(role, provider_id=ids["P"])), frozenset({role}), "right"))
        out.append(Caller(f"{role}@Q", _h(token(role, provider_id=ids["Q"])), frozenset({role}), "other"))
    out.append(Caller("client@V", _h(token("client", voucher_id=ids["V"])), frozenset({Role.CLIENT}), "right"))
    out.append(Caller("client@W", _h(token("client", voucher_id=ids["W"])), frozenset({Role.CLIENT}), "other"))
    past = int(time.time()) - 7200
    bad = {
        "no token": {},
        "expired": _h(mint("x", ["operator"], now=past, ttl=3600)),
        "wrong signature": _h(mint("x", ["operator"], secret="not-the-secret-" * 3)),
        "wrong audience": _h(mint("x", ["operator"], audience="someone-else")),
        "wrong issuer": _h(mint("x", ["operator"], issuer="evil")),
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "funder role without funder": _h(mint("x", ["funder_finance"])),
    }
    out += [Caller(label, h, frozenset(), "bad") for label, h in bad.items()]
    return out


def _h(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


def expected(policy: Policy, caller: Caller) -> str:
    if caller.relation == "bad":
        return "401"
    if not caller.roles & policy.roles:
        return "403"
    if caller.relation == "right" or policy.scope in ("none", "list"):
        return "2xx"
    if policy.scope == "register":
        return "2xx" if caller.roles & FUNDER_ROLES else "404"
    return {"path": "404", "body": "403"}[policy.scope]


def all_routes(world: World):  # noqa: ANN201
    for service, (app, client) in world.clients.items():
        for method, route in endpoints(app):
            yield service, method, route, client


async def test_the_matrix_sees_every_documented_operation(world):  # noqa: ANN001
    for service, (app, _) in world.clients.items():
        documented = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
        assert documented == {(m, r.path) for m, r in endpoints(app)}, service
        assert len(documented) >= 4


async def test_every_endpoint_declares_who_may_call_it(world):  # noqa: ANN001
    missing = [f"{s} {m} {r.path}" for s, m, r, _ in all_routes(world)
               if policy_of(r) is None and (m, r.path) not in PUBLIC]
    assert not missing, f"endpoints without an access policy: {missing}"


async def test_access_matrix(world):  # noqa: ANN001
    failures, cases = [], 0
    for service, method, route, client in all_routes(world):
        policy = policy_of(route)
        if policy is None:
            continue
        path = route.path
        for param, key in PATH_IDS.items():
            path = path.replace("{" + param + "}", world.ids[key])
        path = path.replace("{funder_id}", F1).replace("{month}", date.today().strftime("%Y-%m"))
        if "/value-tables/" in path:  # the world's value table
            path = path.replace("{category}", "home_care").replace("{table_version}", "2026.1")
        body_factory = BODIES.get((method, route.path))
        fresh = FRESH.get((method, route.path))
        for caller in callers(world.ids):
            body = body_factory(world.ids) if body_factory else None
            if fresh:
                fresh_id = await fresh(client, world.ids)
                path = route.path.replace("{application_id}", fresh_id).replace("{price_list_id}", fresh_id) \
                    .replace("{charge_id}", fresh_id).replace("{message_id}", fresh_id) \
                    .replace("{notice_id}", fresh_id).replace("{job_id}", fresh_id)
            r = await client.request(method, path, json=body, headers=caller.headers)
            want = expected(policy, caller)
            got = "2xx" if 200 <= r.status_code < 300 else str(r.status_code)
            cases += 1
            if got != want:
                failures.append(f"{service} {method} {route.path} as {caller.label}: want {want}, got "
                                f"{r.status_code} {r.text[:160]}")
            elif want in ("401", "403", "404"):
                assert "reason" in r.json()["error"], r.text
    assert not failures, f"{len(failures)} of {cases} cases wrong:\n" + "\n".join(failures)
    print(f"access matrix: {cases} cases")
    assert cases > 400


async def test_lists_show_each_caller_only_its_own_tenant(world):  # noqa: ANN001
    pay, ids = world.clients["payments"][1], world.ids
    other_funder = _h(token("funder_finance", funder_id=F2))
    assert ids["S"] not in (await pay.get("/settlements", headers=other_funder)).text
    assert ids["S"] not in (await pay.get(f"/settlements?funder_id={F1}", headers=other_funder)).text
    other_provider = _h(token("provider_charger", provider_id=ids["Q"]))
    assert ids["S"] not in (await pay.get(f"/settlements?provider_id={ids['P']}", headers=other_provider)).text
    assert ids["S"] in (await pay.get("/settlements", headers=_h(token("funder_finance", funder_id=F1)))).text
    vou = world.clients["vouchers"][1]
    assert ids["V"] not in (await vou.get("/vouchers", headers=other_funder)).text
    chosen = (await vou.get("/vouchers", headers=_h(token("provider_manager", provider_id=ids["P"])))).json()
    assert [v["id"] for v in chosen["items"]] == [ids["V"]]
    reg = world.clients["registry"][1]
    mine = (await reg.get("/providers", headers=_h(token("provider_manager", provider_id=ids["Q"])))).json()
    assert [p["id"] for p in mine["items"]] == [ids["Q"]]
    for caller, sees in ((_h(token("funder_finance", funder_id=F2)), False),
                         (_h(token("provider_charger", provider_id=ids["Q"])), False),
                         (_h(token("funder_reporting", funder_id=F1)), True),
                         (_h(token("provider_billing_system", provider_id=ids["P"])), True)):
        charges = (await pay.get(f"/charges?voucher_id={ids['V']}&limit=500", headers=caller)).json()["items"]
        assert (ids["C"] in [c["id"] for c in charges]) is sees and all(c["provider_id"] == ids["P"] for c in charges)
    for service in ("registry", "vouchers", "payments"):
        trail = (await world.clients[service][1].get("/audit", headers=other_funder)).json()["items"]
        assert all(e["funder_id"] == F2 for e in trail) and trail, service
        assert ids["V"] not in str(trail) and ids["C"] not in str(trail)


async def test_client_light_login_gives_a_token_for_that_voucher_only(world):  # noqa: ANN001
    vou, ids = world.clients["vouchers"][1], world.ids
    dm = _h(token("funder_decision_maker", funder_id=F1))
    v = (await vou.get(f"/vouchers/{ids['V']}", headers=dm)).json()
    assert v["issued_at"].endswith("Z"), "timestamps keep their time zone on SQLite too"
    # the matrix above issued codes of its own: the funder issues the one for the letter now
    issued = await vou.post(f"/vouchers/{ids['V']}/client-login-code", headers=dm)
    assert issued.status_code == 200, issued.text
    login_code = issued.json()["client_login_code"]
    r = await vou.post("/client-sessions", json={"voucher_code": v["voucher_code"], "client_login_code": login_code})
    assert r.status_code == 200
    client = _h(r.json()["access_token"])
    assert (await vou.get(f"/vouchers/{ids['V']}", headers=client)).status_code == 200
    assert (await vou.get(f"/vouchers/{ids['W']}", headers=client)).status_code == 404
    wrong = await vou.post("/client-sessions", json={"voucher_code": v["voucher_code"], "client_login_code": "nope"})
    assert (wrong.status_code, wrong.json()["error"]["reason"]) == (401, "invalid_voucher_credentials")
    typo = v["voucher_code"][:-2] + ("0" if v["voucher_code"][-2] != "0" else "1") + v["voucher_code"][-1]
    r = await vou.post("/client-sessions", json={"voucher_code": typo, "client_login_code": login_code})
    assert r.status_code == 401
    # the provider chosen for the voucher sees what it needs to charge, nothing to log in with
    seen = (await vou.get(f"/vouchers/{ids['V']}", headers=_h(token("provider_charger", provider_id=ids["P"])))).json()
    assert seen["view"] == "provider" and {"decision_ref", "client_ref", "client_login_code"}.isdisjoint(seen)
