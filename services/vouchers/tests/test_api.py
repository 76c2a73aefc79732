"""The vouchers service over HTTP, in this process, on its own PostgreSQL database and a bus namespace of
its own on the real RabbitMQ: who sees what of a voucher, the client's light login and its throttle,
refused decisions, and the tenant-scoped list. Time is a FixedClock the tests move."""
from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
from sqlmodel import select

from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.codes import ALPHABET, grouped, normalise
from seteli_shared.db import unit_of_work
from seteli_shared.events import (Envelope, Event, FunderRegistered, ProviderApproved, ProviderReinstated,
                                  ProviderRevoked, ProviderSuspended)
from seteli_shared.logging import new_id
from seteli_shared.messaging import InboxMessage
from seteli_shared.testing import eventually
from vouchers.app import create_app
from vouchers.handlers import on_funder_registered, on_provider_approved, on_provider_suspended
from vouchers.models import ApprovedProvider, Voucher
from vouchers.settings import VouchersSettings

F1, F2 = "091", "092"
P, Q = "prov-p", "prov-q"
PROXY = "10.0.0.5"  # the service fixture's one trusted proxy (TRUSTED_PROXIES), as the portal would be


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}:{new_id()[:6]}', [role], **claims)}"}


OPERATOR = bearer("operator")
DM1 = bearer("funder_decision_maker", funder_id=F1)
DM2 = bearer("funder_decision_maker", funder_id=F2)


class Service:
    def __init__(self, app, stack: AsyncExitStack):  # noqa: ANN001
        self.app, self.stack = app, stack
        self.clock: FixedClock = app.state.clock
        self.http = self.client()

    def client(self, source: str = "10.0.0.1", **kw) -> httpx.AsyncClient:  # noqa: ANN003
        """A client calling from ``source`` (the address the throttle counts)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=(source, 40000)),
                                 base_url="http://vouchers", **kw)

    @property
    def today(self):  # noqa: ANN201
        return self.clock.today()

    async def feed(self, handler, event) -> None:  # noqa: ANN001
        """An event of another service, straight through this service's handler."""
        async with unit_of_work(self.app.state.runtime.sessions) as session:
            await handler(session, Envelope.wrap(event, "registry"), event)

    def decision(self, funder: str = F1, **over) -> dict:  # noqa: ANN003
        return {"funder_id": funder, "decision_ref": f"D-{new_id()[:12]}", "client_ref": f"c-{new_id()[:8]}",
                "category": "home_care", "units_per_period": "20", "value_per_unit_cents": 2500,
                "valid_from": (self.today - timedelta(days=30)).isoformat(),
                "valid_until": (self.today + timedelta(days=300)).isoformat(), **over}

    async def issue(self, funder: str = F1, headers: dict | None = None, **over) -> dict:  # noqa: ANN003
        r = await self.http.post("/vouchers", json=self.decision(funder, **over),
                                 headers=headers or (DM1 if funder == F1 else DM2))
        assert r.status_code == 201, r.text
        return r.json()

    async def choose(self, voucher_id: str, provider: str, funder: str = F1) -> None:
        r = await self.http.post(f"/vouchers/{voucher_id}/provider", json={"provider_id": provider},
                                 headers=DM1 if funder == F1 else DM2)
        assert r.status_code == 200, r.text

    async def login(self, voucher_code: str, login_code: str, client: httpx.AsyncClient | None = None):  # noqa: ANN201
        return await (client or self.http).post("/client-sessions", json={"voucher_code": voucher_code,
                                                                          "client_login_code": login_code})


@pytest.fixture
async def service(pg, namespace, amqp_url):  # noqa: ANN001
    settings = VouchersSettings(environment="test", database_url=await pg.create("vouchers"), amqp_url=amqp_url,
                                bus_namespace=namespace, relay_idle_seconds=0.05, trusted_proxies=f"{PROXY}/32")
    app = create_app(settings)
    app.state.clock = FixedClock(datetime.now(timezone.utc).replace(microsecond=0))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        s = Service(app, stack)
        await stack.enter_async_context(s.http)
        for funder in (F1, F2):
            await s.feed(on_funder_registered, FunderRegistered(
                funder_id=funder, name=f"Kunta {funder}", kind="municipality", operator_fee_rate=Decimal("0.05"),
                registered_at=s.clock.now()))
            for provider in (P, Q):
                await s.feed(on_provider_approved, ProviderApproved(
                    approval_id=new_id(), provider_id=provider, funder_id=funder, category="home_care",
                    approved_at=s.clock.now()))
        yield s


def reason(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["reason"]


def field_reasons(r: httpx.Response) -> dict[str, str]:
    assert reason(r) == (422, "invalid_request"), r.text
    return {e["loc"][-1]: e.get("reason") or e.get("type") for e in r.json()["error"]["details"]["errors"]}


PROVIDER_VIEW = {"view", "id", "voucher_code", "category", "unit", "units_per_period", "period",
                 "value_per_unit_cents", "valid_from", "valid_until", "status", "provider_id", "carry_over",
                 # the voucher's kind and its charging terms (test_kinds.py)
                 "kind", "max_value_per_unit_cents", "client_fee_cents", "budget_cents", "categories"}
LOGIN_MATERIAL = {"client_login_code", "client_login_hash", "client_login_salt"}


# ------------------------------------------------------------------ issuing
async def test_a_voucher_is_issued_only_for_a_funder_the_registry_announced(service):  # noqa: ANN001
    dm = bearer("funder_decision_maker", funder_id="093")
    r = await service.http.post("/vouchers", json=service.decision("093"), headers=dm)
    assert reason(r) == (422, "unknown_funder")
    # the registry's announcement arrives over the bus: the subscription comes from HANDLERS
    event = FunderRegistered(funder_id="093", name="Kunta 093", kind="municipality",
                             operator_fee_rate=Decimal("0.05"), registered_at=service.clock.now())
    env = Envelope.wrap(event, "registry")
    await service.app.state.runtime.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id,
                                                type_=env.type)

    async def issued():  # noqa: ANN202
        return (await service.http.post("/vouchers", json=service.decision("093"), headers=dm)).status_code == 201

    await eventually(issued)


async def test_bad_decisions_are_refused(service):  # noqa: ANN001
    for valid_from, valid_until in (("1900-01-01", "1900-12-31"),
                                    ((service.today - timedelta(days=400)).isoformat(),
                                     (service.today + timedelta(days=10)).isoformat()),
                                    (service.today.isoformat(), (service.today + timedelta(days=6 * 365)).isoformat())):
        r = await service.http.post("/vouchers", headers=DM1,
                                    json=service.decision(valid_from=valid_from, valid_until=valid_until))
        assert reason(r) == (422, "invalid_validity"), r.text
    r = await service.http.post("/vouchers", headers=DM1, json=service.decision(
        decision_ref="   ", client_ref="\t", category="nope", value_per_unit_cents=-1))
    assert field_reasons(r) == {"decision_ref": "string_too_short", "client_ref": "string_too_short",
                                "category": "unknown_category", "value_per_unit_cents": "greater_than"}
    r = await service.http.post("/vouchers", headers=DM1, json=service.decision(decision_ref="  HKI-2026-9  "))
    assert r.status_code == 201 and r.json()["decision_ref"] == "HKI-2026-9", "stripped, then validated"


# ------------------------------------------------------------------ who sees what
async def test_the_provider_sees_what_it_needs_to_charge_and_cannot_log_in_as_the_client(service):  # noqa: ANN001
    decision = service.decision()
    issued = (await service.http.post("/vouchers", json=decision, headers=DM1)).json()
    login_code = issued["client_login_code"]
    # shown in groups of four for the letter (``7RH8-ZB3R-Z5K``), every symbol one a person can read aloud
    assert grouped(normalise(login_code)) == login_code and len(normalise(login_code)) >= 10
    assert set(normalise(login_code)) <= set(ALPHABET) and set(normalise(issued["voucher_code"])) <= set(ALPHABET)
    assert issued["voucher_code"] == grouped(normalise(issued["voucher_code"]))
    await service.choose(issued["id"], P)

    provider = bearer("provider_charger", provider_id=P)
    seen = (await service.http.get(f"/vouchers/{issued['id']}", headers=provider)).json()
    assert set(seen) == PROVIDER_VIEW and seen["view"] == "provider"
    assert seen["voucher_code"] == issued["voucher_code"] and seen["provider_id"] == P
    assert decision["decision_ref"] not in str(seen) and decision["client_ref"] not in str(seen)
    [listed] = (await service.http.get("/vouchers", headers=provider)).json()["items"]
    assert listed == seen

    # what the provider knows no longer logs in
    old_contract = await service.http.post("/client-sessions", json={
        "voucher_code": seen["voucher_code"], "decision_ref": decision["decision_ref"]})
    assert field_reasons(old_contract) == {"decision_ref": "extra_forbidden", "client_login_code": "missing"}
    for guess in (decision["decision_ref"], seen["voucher_code"], seen["id"][:13]):
        assert reason(await service.login(seen["voucher_code"], guess)) == (401, "invalid_voucher_credentials")

    # no one sees the login code again: not the funder, not operator staff, not a repeated decision
    for headers in (DM1, OPERATOR, bearer("funder_reporting", funder_id=F1)):
        v = (await service.http.get(f"/vouchers/{issued['id']}", headers=headers)).json()
        assert v["view"] == "funder" and v["decision_ref"] == decision["decision_ref"]
        assert not LOGIN_MATERIAL & set(v) and login_code not in str(v)
    again = await service.http.post("/vouchers", json=decision, headers=DM1)
    assert (again.status_code, again.json()["id"], again.json()["client_login_code"]) == (200, issued["id"], None)
    async with service.app.state.runtime.sessions() as session:
        stored = await session.get(Voucher, issued["id"])
    assert login_code not in str(stored.model_dump()), "only a salted hash is kept"

    # and the client's own view carries no decision internals
    token = (await service.login(issued["voucher_code"], login_code)).json()["access_token"]
    mine = (await service.http.get(f"/vouchers/{issued['id']}",
                                   headers={"Authorization": f"Bearer {token}"})).json()
    assert mine["view"] == "client" and {"decision_ref", "client_ref"}.isdisjoint(mine)
    assert not LOGIN_MATERIAL & set(mine)


async def test_the_login_code_works_once_issued_and_stops_working_when_a_new_one_is_issued(service):  # noqa: ANN001
    v, other = await service.issue(), await service.issue()
    r = await service.login(v["voucher_code"].lower(), v["client_login_code"].lower())
    assert r.status_code == 200, r.text
    client = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert r.json()["voucher_id"] == v["id"]
    assert (await service.http.get(f"/vouchers/{v['id']}", headers=client)).status_code == 200
    assert (await service.http.get(f"/vouchers/{other['id']}", headers=client)).status_code == 404
    assert reason(await service.login(v["voucher_code"], other["client_login_code"])) == (
        401, "invalid_voucher_credentials"), "another voucher's login code is no key to this one"

    # only the voucher's funder's decision maker or case system issues a new code
    path = f"/vouchers/{v['id']}/client-login-code"
    assert (await service.http.post(path, headers=DM2)).status_code == 404
    assert (await service.http.post(path, headers=OPERATOR)).status_code == 403
    assert (await service.http.post(path, headers=bearer("provider_manager", provider_id=P))).status_code == 403
    assert (await service.http.post(path, headers=client)).status_code == 403
    r = await service.http.post(path, headers=bearer("funder_case_system", funder_id=F1))
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["voucher_id"], new["voucher_code"]) == (v["id"], v["voucher_code"])
    assert new["client_login_code"] != v["client_login_code"]
    old = await service.login(v["voucher_code"], v["client_login_code"])
    assert reason(old) == (401, "invalid_voucher_credentials")
    assert (await service.login(v["voucher_code"], new["client_login_code"])).status_code == 200
    trail = (await service.http.get("/audit", headers=DM1)).json()["items"]
    assert {"voucher.issue", "voucher.client_login_code.issue", "client.login"} <= {e["action"] for e in trail}
    assert new["client_login_code"] not in str(trail)


# ------------------------------------------------------------------ throttling
WRONG = "0000000000000"


async def test_failures_from_one_address_never_keep_the_right_code_out_from_another(service):  # noqa: ANN001
    v = await service.issue()
    async with service.client("192.0.2.7") as attacker:
        answers = [reason(await service.login(v["voucher_code"], WRONG, attacker)) for _ in range(30)]
    assert answers[:5] == [(401, "invalid_voucher_credentials")] * 5
    assert set(answers[5:]) == {(429, "too_many_attempts")}, "the attacker's own address waits"
    # the client, from its own address, at once and again and again
    for _ in range(3):
        assert (await service.login(v["voucher_code"], v["client_login_code"])).status_code == 200
    # and its own typos are its own: five answered at once
    async with service.client("198.51.100.20") as client:
        for _ in range(5):
            assert reason(await service.login(v["voucher_code"], WRONG, client))[0] == 401
        assert (await service.login(v["voucher_code"], v["client_login_code"], client)).status_code == 429


async def test_a_guess_spread_over_many_addresses_is_slowed_at_each_but_the_right_code_still_comes_in(service):  # noqa: ANN001
    v = await service.issue()
    for i in range(50):  # the alarm: 50 failures of one voucher code from all addresses together
        async with service.client(f"203.0.113.{i}") as bot:
            assert reason(await service.login(v["voucher_code"], WRONG, bot))[0] == 401
    async with service.client("203.0.113.200") as bot:
        assert reason(await service.login(v["voucher_code"], WRONG, bot))[0] == 401
        r = await service.login(v["voucher_code"], v["client_login_code"], bot)
        assert (r.status_code, r.headers["Retry-After"]) == (429, "2"), "a new address waits after its first miss"
    async with service.client("198.51.100.21") as client:
        assert (await service.login(v["voucher_code"], v["client_login_code"], client)).status_code == 200


async def test_one_voucher_code_from_one_address_is_slowed_progressively_alike_for_real_and_made_up_codes(service):  # noqa: ANN001
    v = await service.issue()
    made_up = next(c for c in ("7KQ2M9XH4D" + s for s in "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U")
                   if normalise(c) and normalise(c) != normalise(v["voucher_code"]))

    async def attempts(code: str, login_code: str, client: httpx.AsyncClient) -> list:  # noqa: ANN001
        seen = []
        for _ in range(5):  # answered at once
            seen.append(reason(await service.login(code, WRONG, client)))
        for wait in (2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900):
            r = await service.login(code, login_code, client)  # even the right code: this address waits
            later = await service.login(code, login_code, client)
            assert int(later.headers["Retry-After"]) == wait, "a refused attempt does not lengthen the wait"
            seen.append((*reason(r), r.headers["Retry-After"]))
            service.clock.advance(seconds=wait)
            seen.append(reason(await service.login(code, WRONG, client)))
        return seen

    async with service.client("192.0.2.50") as one, service.client("192.0.2.51") as other:
        start = service.clock.now()
        real = await attempts(v["voucher_code"], v["client_login_code"], one)
        service.clock.at = start
        fake = await attempts(made_up, WRONG, other)
    assert real == fake, "a made-up voucher code is throttled exactly like a real one"
    assert [r[2] for r in real if len(r) == 3] == ["2", "4", "8", "16", "32", "64", "128", "256", "512", "900", "900"]

    # once its wait is over the right code comes in, and its failures with this code are forgotten
    service.clock.advance(seconds=900)
    async with service.client("192.0.2.50") as one:
        assert (await service.login(v["voucher_code"], v["client_login_code"], one)).status_code == 200
        assert reason(await service.login(v["voucher_code"], WRONG, one))[0] == 401
        assert (await service.login(v["voucher_code"], v["client_login_code"], one)).status_code == 200
    # a day without failures forgets the rest
    async with service.client("192.0.2.51") as other:
        service.clock.advance(days=1)
        assert [reason(await service.login(made_up, WRONG, other))[0] for _ in range(5)] == [401] * 5


async def test_an_address_trying_many_voucher_codes_is_slowed_after_twenty_failures(service):  # noqa: ANN001
    vouchers = [await service.issue() for _ in range(6)]
    async with service.client("192.0.2.7") as attacker:
        for v in vouchers[:5]:  # four per voucher: no voucher code reaches its own five
            for _ in range(4):
                assert (await service.login(v["voucher_code"], WRONG, attacker)).status_code == 401
        last = vouchers[5]
        r = await service.login(last["voucher_code"], last["client_login_code"], attacker)
        assert reason(r) == (429, "too_many_attempts") and r.headers["Retry-After"] == "2"
        assert r.json()["error"]["details"]["retry_after_seconds"] == 2
        assert (await service.login("ZZZZZZZZZZZ", WRONG, attacker)).status_code == 429
        # another address is not slowed
        assert (await service.login(last["voucher_code"], last["client_login_code"])).status_code == 200
        service.clock.advance(seconds=2)
        assert (await service.login(last["voucher_code"], last["client_login_code"], attacker)).status_code == 200


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(service):  # noqa: ANN001
    v = await service.issue()
    # an untrusted caller cannot escape its throttle by naming another address each time
    async with service.client("192.0.2.66") as forger:
        for i in range(5):
            r = await forger.post("/client-sessions", json={"voucher_code": v["voucher_code"], "client_login_code": WRONG},
                                  headers={"X-Forwarded-For": f"198.51.100.{i}"})
            assert r.status_code == 401
        r = await forger.post("/client-sessions", headers={"X-Forwarded-For": "198.51.100.99"},
                              json={"voucher_code": v["voucher_code"], "client_login_code": v["client_login_code"]})
        assert r.status_code == 429, "the forged header was believed"
    # the portal (a trusted proxy) names the browser's address: one browser's failures stay its own
    async with service.client(PROXY) as portal:
        async def via_portal(browser: str, login_code: str) -> httpx.Response:
            return await portal.post("/client-sessions", headers={"X-Forwarded-For": browser},
                                     json={"voucher_code": v["voucher_code"], "client_login_code": login_code})

        assert [(await via_portal("198.51.100.7", WRONG)).status_code for _ in range(7)] == [401] * 5 + [429] * 2
        assert (await via_portal("198.51.100.8", v["client_login_code"])).status_code == 200
        # a browser behind the portal is counted by its own address, not the portal's
        assert (await via_portal("192.0.2.66", v["client_login_code"])).status_code == 429
        # the portal's own requests without the header are the portal's
        r = await portal.post("/client-sessions", json={"voucher_code": v["voucher_code"],
                                                        "client_login_code": v["client_login_code"]})
        assert r.status_code == 200


# ------------------------------------------------------------------ the list
async def test_the_list_shows_each_caller_its_own_part_a_page_at_a_time(service):  # noqa: ANN001
    mine = []
    for i in range(5):
        service.clock.advance(seconds=1)
        mine.append(await service.issue(client_ref=f"asiakas-{i}"))
    theirs = [await service.issue(F2) for _ in range(2)]
    await service.choose(mine[1]["id"], P)
    await service.choose(mine[3]["id"], P)
    await service.choose(theirs[0]["id"], P, funder=F2)
    await service.choose(mine[4]["id"], Q)

    async def ids(headers: dict, query: str = "", limit: int = 2) -> list[str]:
        out, cursor = [], None
        while True:
            r = await service.http.get(f"/vouchers?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else ""),
                                       headers=headers)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= limit
            out += [v["id"] for v in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return out

    assert await ids(DM1) == [v["id"] for v in mine], "oldest first, every one once"
    assert sorted(await ids(OPERATOR, limit=3)) == sorted(v["id"] for v in mine + theirs)
    assert sorted(await ids(bearer("funder_case_system", funder_id=F2))) == sorted(v["id"] for v in theirs)
    provider = bearer("provider_manager", provider_id=P)
    assert sorted(await ids(provider)) == sorted([mine[1]["id"], mine[3]["id"], theirs[0]["id"]])
    page = (await service.http.get("/vouchers", headers=provider)).json()
    assert all(set(v) == PROVIDER_VIEW for v in page["items"])
    assert await ids(provider, "&status=provider_chosen&category=home_care") == await ids(provider)
    assert await ids(provider, "&status=issued") == []

    assert await ids(DM1, "&client_ref=asiakas-3") == [mine[3]["id"]]
    assert await ids(DM2, "&client_ref=asiakas-3") == [], "another funder's clients stay hidden"
    assert await ids(DM1, f"&decision_ref={theirs[0]['decision_ref']}") == []
    assert await ids(OPERATOR, f"&decision_ref={theirs[0]['decision_ref']}") == [theirs[0]["id"]]
    assert await ids(DM1, "&status=issued") == [mine[0]["id"], mine[2]["id"]]
    r = await service.http.get("/vouchers?client_ref=asiakas-3", headers=provider)
    assert reason(r) == (403, "filter_not_allowed")

    token = (await service.login(mine[2]["voucher_code"], mine[2]["client_login_code"])).json()["access_token"]
    client = {"Authorization": f"Bearer {token}"}
    [own] = (await service.http.get("/vouchers", headers=client)).json()["items"]
    assert (own["id"], own["view"]) == (mine[2]["id"], "client")
    r = await service.http.get("/vouchers?cursor=bm90LWEtY3Vyc29y", headers=DM1)
    assert reason(r) == (400, "invalid_cursor")


async def test_concurrent_wrong_attempts_never_get_past_the_limit(service):  # noqa: ANN001
    import asyncio

    v = await service.issue()
    answers = await asyncio.gather(*(service.login(v["voucher_code"], "0000000000000") for _ in range(12)))
    assert sorted(r.status_code for r in answers) == [401] * 5 + [429] * 7


# ------------------------------------------------------------------ the approval's life cycle
S = "prov-s"


async def _approve(service, provider: str, approval_id: str) -> None:  # noqa: ANN001
    await service.feed(on_provider_approved, ProviderApproved(
        approval_id=approval_id, provider_id=provider, funder_id=F1, category="home_care",
        approved_at=service.clock.now() - timedelta(days=100)))


def _life(cls, provider: str, approval_id: str, at: datetime, **kw) -> Event:  # noqa: ANN001, ANN003
    stamp = {ProviderSuspended: "suspended_at", ProviderReinstated: "reinstated_at", ProviderRevoked: "revoked_at"}
    if cls is not ProviderReinstated:
        kw.setdefault("reason", "insurance_lapsed")
    return cls(approval_id=approval_id, provider_id=provider, funder_id=F1, category="home_care",
               **{stamp[cls]: at}, **kw)


async def _publish(service, event: Event, env: Envelope | None = None) -> Envelope:  # noqa: ANN001
    """Publish on the bus as the registry would (``env`` again: the same message redelivered); returns
    once this service's consumer has taken it (its inbox has the message's id)."""
    env = env or Envelope.wrap(event, "registry")
    await service.app.state.runtime.bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id,
                                                type_=env.type)

    async def taken():  # noqa: ANN202
        async with service.app.state.runtime.sessions() as session:
            return (await session.exec(select(InboxMessage).where(InboxMessage.message_id == env.id))).first()

    await eventually(taken)
    return env


async def _approval_row(service, provider: str) -> dict:  # noqa: ANN001
    async with service.app.state.runtime.sessions() as session:
        return (await session.get(ApprovedProvider, (F1, provider, "home_care"))).model_dump()


async def _choose(service, voucher_id: str, provider: str) -> httpx.Response:  # noqa: ANN001
    return await service.http.post(f"/vouchers/{voucher_id}/provider", json={"provider_id": provider}, headers=DM1)


async def test_a_suspended_provider_cannot_be_chosen_until_reinstated_and_its_clients_still_see_their_vouchers(
        service):  # noqa: ANN001
    await _approve(service, S, "appr-s")
    chosen_before, later, other = await service.issue(), await service.issue(), await service.issue()
    await service.choose(chosen_before["id"], S)
    now, today = service.clock.now(), service.today

    # suspended from tomorrow: still choosable today, not tomorrow
    await service.feed(on_provider_suspended,
                       _life(ProviderSuspended, S, "appr-s", now, effective_from=today + timedelta(days=1)))
    assert (await _choose(service, other["id"], S)).status_code == 200
    service.clock.advance(days=1)
    r = await _choose(service, later["id"], S)
    assert reason(r) == (422, "provider_suspended")
    assert r.json()["error"]["details"]["effective_from"] == (today + timedelta(days=1)).isoformat()

    # the client of a voucher with the suspended provider chosen still sees it, and may switch away
    token = (await service.login(chosen_before["voucher_code"], chosen_before["client_login_code"])).json()
    client = {"Authorization": f"Bearer {token['access_token']}"}
    mine = await service.http.get(f"/vouchers/{chosen_before['id']}", headers=client)
    assert mine.status_code == 200 and (mine.json()["provider_id"], mine.json()["status"]) == (S, "provider_chosen")
    assert (await service.http.get(f"/vouchers/{chosen_before['id']}", headers=DM1)).json()["provider_id"] == S
    again = await service.http.post(f"/vouchers/{chosen_before['id']}/provider", json={"provider_id": S},
                                    headers=client)
    assert reason(again) == (422, "provider_suspended"), "choosing it again is choosing a suspended provider"
    switched = await service.http.post(f"/vouchers/{chosen_before['id']}/provider", json={"provider_id": P},
                                       headers=client)
    assert switched.status_code == 200 and switched.json()["provider_id"] == P

    # reinstated over the bus: choosable again
    await _publish(service, _life(ProviderReinstated, S, "appr-s", service.clock.now()))
    r = await _choose(service, later["id"], S)
    assert r.status_code == 200 and r.json()["provider_id"] == S


async def test_a_stale_reinstatement_and_redelivered_events_change_nothing(service):  # noqa: ANN001
    await _approve(service, S, "appr-s")
    v = await service.issue()
    now = service.clock.now()
    suspension = _life(ProviderSuspended, S, "appr-s", now, effective_from=service.today)
    first = await _publish(service, suspension)
    assert reason(await _choose(service, v["id"], S)) == (422, "provider_suspended")
    suspended = await _approval_row(service, S)
    assert (suspended["status"], suspended["not_in_force_from"]) == ("suspended", service.today)

    # a reinstatement older than the suspension (it was overtaken on the way), the same message again,
    # and the same suspension in a new message: nothing changes
    await _publish(service, _life(ProviderReinstated, S, "appr-s", now - timedelta(minutes=5)))
    await _publish(service, suspension, env=first)
    await _publish(service, suspension)
    assert await _approval_row(service, S) == suspended
    assert reason(await _choose(service, v["id"], S)) == (422, "provider_suspended")

    # a newer reinstatement lifts it; the old suspension arriving again after it does not bring it back
    service.clock.advance(minutes=1)
    await _publish(service, _life(ProviderReinstated, S, "appr-s", service.clock.now()))
    reinstated = await _approval_row(service, S)
    await _publish(service, suspension)
    await _publish(service, ProviderApproved(approval_id="appr-s", provider_id=S, funder_id=F1, category="home_care",
                                             approved_at=now - timedelta(days=100)))
    assert await _approval_row(service, S) == reinstated
    assert (await _choose(service, v["id"], S)).status_code == 200


async def test_a_revoked_provider_stays_refused_even_when_a_stale_reinstatement_arrives(service):  # noqa: ANN001
    await _approve(service, S, "appr-r")
    v = await service.issue()
    now = service.clock.now()
    revocation = await _publish(service, _life(ProviderRevoked, S, "appr-r", now, effective_from=service.today,
                                               reason="funder_decision"))
    r = await _choose(service, v["id"], S)
    assert reason(r) == (422, "provider_revoked")
    assert r.json()["error"]["details"]["effective_from"] == service.today.isoformat()
    revoked = await _approval_row(service, S)

    await _publish(service, _life(ProviderReinstated, S, "appr-r", now - timedelta(hours=1)))  # stale
    await _publish(service, _life(ProviderReinstated, S, "appr-r", now + timedelta(hours=1)))  # final all the same
    await _publish(service, _life(ProviderSuspended, S, "appr-r", now + timedelta(hours=2),
                                  effective_from=service.today + timedelta(days=5)))
    await _publish(service, revocation.event(), env=revocation)
    assert await _approval_row(service, S) == revoked
    assert reason(await _choose(service, v["id"], S)) == (422, "provider_revoked")
