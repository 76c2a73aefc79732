"""Prices: the rules (pure), price lists over HTTP with their history and approval, the events they
publish, and the public comparison. The registry runs in this process on its own PostgreSQL database
(the comparison also on the embedded SQLite) and a bus namespace of its own on the real RabbitMQ;
its clock stands still at a fixed day."""
from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import aio_pika
import httpx
import pytest
import sqlalchemy as sa

from registry import prices
from registry.app import create_app
from registry.models import Approval, Rulebook, ServiceUnit
from registry.price_models import PriceList
from registry.settings import RegistrySettings
from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.devtools import random_business_id
from seteli_shared.errors import DomainError
from seteli_shared.logging import new_id
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import eventually

IBAN = "FI2112345600000785"
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=timezone.utc)
TODAY = NOW.date()
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}', [role], **claims)}"}


# ------------------------------------------------------------------ the rules, pure
def test_a_price_is_whole_cents_above_zero_and_below_a_ceiling():
    assert prices.check_price(1) == 1 and prices.check_price(prices.MAX_UNIT_PRICE_CENTS) == 100_000
    for bad, reason in ((0, "invalid_price"), (-5, "invalid_price"), (True, "invalid_price"), (2.5, "invalid_price"),
                        (100_001, "price_too_high"), (10**12, "price_too_high")):
        with pytest.raises(DomainError) as refused:
            prices.check_price(bad)  # type: ignore[arg-type]
        assert refused.value.reason == reason, bad
    assert prices.check_tariffs({"weekday": 3350, "sunday": 5580, "saturday": None}) == {"weekday": 3350,
                                                                                       "sunday": 5580}
    with pytest.raises(DomainError) as refused:
        prices.check_tariffs({"sunday": 0})
    assert refused.value.reason == "invalid_price" and refused.value.details["field"] == "sunday"
    with pytest.raises(DomainError) as refused:
        prices.check_tariffs({"holiday": 100})
    assert refused.value.reason == "unknown_tariff"


def test_categories_and_units():
    assert prices.unit_of("home_care") == "hour" and prices.unit_of("home_nursing") == "visit"
    with pytest.raises(DomainError) as refused:
        prices.check_category("astrology")
    assert refused.value.reason == "unknown_category"


def test_a_price_takes_effect_today_at_the_earliest():
    assert prices.check_effective_from(TODAY, TODAY) == TODAY
    assert prices.check_effective_from(TODAY + timedelta(days=90), TODAY)
    for past in (TODAY - timedelta(days=1), date(2026, 3, 1), date(2026, 2, 28)):
        with pytest.raises(DomainError) as refused:
            prices.check_effective_from(past, TODAY)
        assert refused.value.reason == "effective_date_in_past"
    # approving late: a date already passed in this month is still open, last month's is settled
    prices.check_still_open(date(2026, 3, 1), TODAY)
    with pytest.raises(DomainError) as refused:
        prices.check_still_open(date(2026, 2, 28), TODAY)
    assert refused.value.reason == "effective_date_in_past"


def test_decisions_on_a_price_list():
    P, A, R = prices.PriceListStatus.PUBLISHED, prices.Decision.APPROVE, prices.Decision.REJECT
    assert prices.initial_status(True) is prices.PriceListStatus.PENDING_APPROVAL
    assert prices.initial_status(False) is P
    assert prices.decide("pending_approval", A) == (P, True)
    assert prices.decide("pending_approval", R) == (prices.PriceListStatus.REJECTED, True)
    assert prices.decide("published", A) == (P, False), "approving again is a retry"
    assert prices.decide("rejected", R) == (prices.PriceListStatus.REJECTED, False)
    for status, decision in (("published", R), ("rejected", A)):
        with pytest.raises(DomainError) as refused:
            prices.decide(status, decision)
        assert (refused.value.reason, refused.value.status_code) == ("price_list_not_pending", 409)


def test_the_price_in_force_is_the_latest_published_list_from_that_day_or_before():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    e = prices.PriceEntry
    history = [e("a", "published", date(2026, 1, 1), at, 2500), e("b", "published", date(2026, 4, 1), at, 2700),
               e("c", "pending_approval", date(2026, 3, 1), None, 9999), e("d", "rejected", date(2026, 2, 1), at, 1),
               e("e", "published", date(2026, 4, 1), at + timedelta(hours=1), 2800)]
    assert prices.price_in_force(history, date(2025, 12, 31)) is None
    assert prices.price_in_force(history, date(2026, 3, 31)).id == "a", "pending and rejected lists never count"
    assert prices.price_in_force(history, date(2026, 4, 1)).id == "e", "of one day, the later publication"
    assert prices.price_in_force(history, date(2030, 1, 1)).unit_price_cents == 2800


def test_own_share_never_negative_and_monthly_rounded_once():
    assert prices.own_share_per_unit(2500, 1500) == 1000  # the seed: 25.00 - 15.00 = 10.00 an hour
    assert prices.own_share_per_unit(2500, 3000) == 0
    assert prices.own_share_per_month(1000, Decimal("20")) == 20000
    assert prices.own_share_per_month(333, Decimal("2.5")) == 833  # 832.5 rounds half up, once
    assert prices.own_share_per_month(0, Decimal("20")) == 0
    assert prices.sort_value("own_share", None, 2500, "x") == prices.MAX_UNIT_PRICE_CENTS + 1


# ------------------------------------------------------------------ over HTTP
class Registry:
    def __init__(self, app, client: httpx.AsyncClient):  # noqa: ANN001
        self.app, self.http = app, client

    @property
    def sessions(self):  # noqa: ANN201
        return self.app.state.runtime.sessions

    async def funder(self, funder_id: str = "091") -> str:
        r = await self.http.post("/funders", json={"funder_id": funder_id, "name": f"Kunta {funder_id}",
                                                   "kind": "municipality"})
        assert r.status_code in (200, 201), r.text
        return funder_id

    async def rulebook(self, funder_id: str, category: str = "home_care", *, approval: bool = False,
                       version: str = "1") -> None:
        async with self.sessions() as s, s.begin():
            s.add(Rulebook(id=new_id(), funder_id=funder_id, category=category, rulebook_version=version,
                           title="Kotihoidon sääntökirja", price_changes_need_approval=approval,
                           prepayment_check_max_age_days=365, published_at=datetime.now(timezone.utc)))

    async def provider(self, name: str, *, languages: list[str] = (), municipalities: list[str] = (),
                       units: list[tuple[str, str]] = ()) -> str:  # type: ignore[assignment]
        r = await self.http.post("/providers", json={"business_id": random_business_id(), "name": name, "iban": IBAN})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        async with self.sessions() as s, s.begin():
            await s.execute(sa.text("UPDATE registry_provider SET contact_email = :e WHERE id = :id"),
                            {"e": f"{pid[:8]}@example.fi", "id": pid})
            from registry.models import Provider
            provider = await s.get(Provider, pid)
            provider.languages, provider.municipalities = list(languages), list(municipalities)
            s.add(provider)
            for i, (unit_name, municipality) in enumerate(units):
                s.add(ServiceUnit(id=new_id(), provider_id=pid, position=i, name=unit_name,
                                  street_address="Mannerheimintie 1", postal_code="00100",
                                  municipality_code=municipality))
        return pid

    async def approve(self, provider_id: str, funder_id: str = "091", category: str = "home_care",
                      status: str = "active", status_effective_from: date | None = None) -> None:
        async with self.sessions() as s, s.begin():
            s.add(Approval(id=new_id(), provider_id=provider_id, funder_id=funder_id, category=category,
                           approved_at=datetime.now(timezone.utc), status=status,
                           status_effective_from=status_effective_from))

    async def price(self, provider_id: str, cents: int, *, funder_id: str = "091", category: str = "home_care",
                    effective_from: date = TODAY, headers: dict | None = None, **extra) -> httpx.Response:  # noqa: ANN003
        return await self.http.post(f"/providers/{provider_id}/price-lists", headers=headers or OPERATOR, json={
            "funder_id": funder_id, "category": category, "unit_price_cents": cents,
            "effective_from": effective_from.isoformat(), **extra})

    async def count(self, table, **where) -> int:  # noqa: ANN001, ANN003
        async with self.sessions() as s:
            q = sa.select(sa.func.count()).select_from(table)
            for k, v in where.items():
                q = q.where(getattr(table.c, k) == v)
            return (await s.execute(q)).scalar_one()

    async def published_events(self) -> list[dict]:
        async with self.sessions() as s:
            rows = (await s.execute(sa.select(OutboxMessage.body).where(
                OutboxMessage.routing_key == "price_list.published.v1").order_by(OutboxMessage.seq))).scalars().all()
        return [json.loads(b)["data"] for b in rows]


async def _registry(url: str, amqp_url: str, namespace: str, stack: AsyncExitStack) -> Registry:
    settings = RegistrySettings(environment="test", database_url=url, amqp_url=amqp_url, bus_namespace=namespace,
                                relay_idle_seconds=0.05)
    app = create_app(settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    app.state.clock = FixedClock(NOW)
    client = await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://registry", headers=OPERATOR))
    return Registry(app, client)


@pytest.fixture
async def registry(pg, namespace, amqp_url):  # noqa: ANN001
    async with AsyncExitStack() as stack:
        yield await _registry(await pg.create("registry"), amqp_url, namespace, stack)


@pytest.fixture(params=["postgresql", "sqlite"])
async def any_registry(request, pg, namespace, amqp_url, tmp_path):  # noqa: ANN001
    url = await pg.create("registry") if request.param == "postgresql" else \
        f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    async with AsyncExitStack() as stack:
        yield await _registry(url, amqp_url, namespace, stack)


@pytest.fixture
async def spy(amqp_url, namespace):  # noqa: ANN001
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange, "price_list.#")
    yield queue
    await connection.close()


def reason(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["reason"]


async def test_a_price_list_is_published_at_once_and_announced(registry, spy):  # noqa: ANN001
    await registry.funder()
    await registry.rulebook("091")
    pid = await registry.provider("Kotihoiva Oy")
    await registry.approve(pid)
    manager = bearer("provider_manager", provider_id=pid)
    r = await registry.price(pid, 2500, headers=manager, tariffs={"weekday_evening": 3860, "sunday": 5580},
                             effective_from=TODAY + timedelta(days=5))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body | {"id": None, "created_at": None, "published_at": None} == {
        "id": None, "provider_id": pid, "funder_id": "091", "category": "home_care", "unit": "hour",
        "unit_price_cents": 2500, "tariffs": {"weekday_evening": 3860, "sunday": 5580},
        "effective_from": "2026-03-15", "status": "published", "created_at": None, "decided_at": None,
        "published_at": None, "grounds": None}
    assert body["published_at"].startswith("2026-03-10")

    async def announced():  # noqa: ANN202
        message = await spy.get(no_ack=True, fail=False)
        return message and json.loads(message.body)
    event = await eventually(announced)
    assert event["type"] == "fi.seteli.price_list.published.v1" and event["subject"] == pid
    assert event["data"] | {"published_at": None} == {
        "price_list_id": body["id"], "provider_id": pid, "funder_id": "091", "category": "home_care", "unit": "hour",
        "unit_price_cents": 2500, "tariffs": {"weekday_evening": 3860, "sunday": 5580},
        "effective_from": "2026-03-15", "published_at": None}
    assert [e["price_list_id"] for e in await registry.published_events()] == [body["id"]]
    # another provider's manager may not set this provider's prices; a funder's staff may not either
    other = bearer("provider_manager", provider_id="someone-else")
    assert (await registry.price(pid, 2600, headers=other)).status_code == 404
    assert (await registry.price(pid, 2600, headers=bearer("funder_provider_approver", funder_id="091"))
            ).status_code == 403


async def test_each_refusal_has_its_reason_and_stores_nothing(registry):  # noqa: ANN001
    await registry.funder("091")
    await registry.funder("092")
    await registry.rulebook("091")
    await registry.rulebook("092", "cleaning")
    pid = await registry.provider("Kotihoiva Oy")
    await registry.approve(pid)
    await registry.approve(pid, "092", "home_care")  # 092 has no rulebook for home care
    stranger = await registry.provider("Ei hyväksytty Oy")
    suspended = await registry.provider("Keskeytetty Oy")
    await registry.approve(suspended, status="suspended", status_effective_from=TODAY)
    cases = [
        (registry.price(pid, 0), (422, "invalid_price")),
        (registry.price(pid, -100), (422, "invalid_price")),
        (registry.price(pid, 100_001), (422, "price_too_high")),
        (registry.price(pid, 2500, tariffs={"sunday": 0}), (422, "invalid_price")),
        (registry.price(pid, 2500, tariffs={"saturday": 200_000}), (422, "price_too_high")),
        (registry.price(pid, 2500, effective_from=TODAY - timedelta(days=1)), (422, "effective_date_in_past")),
        (registry.price(pid, 2500, effective_from=date(2026, 2, 1)), (422, "effective_date_in_past")),
        (registry.price(pid, 2500, category="astrology"), (422, "unknown_category")),
        (registry.price(pid, 2500, category="cleaning"), (422, "category_not_used_by_funder")),
        (registry.price(pid, 2500, funder_id="092"), (422, "category_not_used_by_funder")),
        (registry.price(pid, 2500, funder_id="093"), (422, "unknown_funder")),
        (registry.price(stranger, 2500), (422, "provider_not_approved")),
        (registry.price(suspended, 2500), (422, "provider_not_approved")),
        (registry.price(stranger, 2500, funder_id="092", category="cleaning"), (422, "provider_not_approved")),
        (registry.price("no-such-provider", 2500), (404, "provider_not_found")),
    ]
    for call, want in cases:
        r = await call
        assert reason(r) == want, (want, r.text)
    r = await registry.price(pid, "25.00")  # type: ignore[arg-type]  (cents are whole: no decimal point)
    assert r.status_code == 422 and r.json()["error"]["reason"] == "invalid_number"
    r = await registry.price(pid, 2500, currency="EUR")
    assert r.status_code == 422 and r.json()["error"]["reason"] == "invalid_request"
    assert await registry.count(PriceList.__table__) == 0
    assert await registry.published_events() == []
    assert (await registry.price(pid, 100_000)).status_code == 201, "the ceiling itself is a price"


async def test_the_whole_history_is_kept_and_the_price_in_force_follows_the_date(registry):  # noqa: ANN001
    await registry.funder()
    await registry.rulebook("091")
    pid = await registry.provider("Kotihoiva Oy")
    await registry.approve(pid)
    first = (await registry.price(pid, 2500)).json()
    registry.app.state.clock.advance(minutes=1)
    april = (await registry.price(pid, 2700, effective_from=date(2026, 4, 1))).json()
    registry.app.state.clock.advance(minutes=1)
    fix = (await registry.price(pid, 2650, effective_from=date(2026, 4, 1))).json()  # same day, later
    history = (await registry.http.get(f"/providers/{pid}/price-lists")).json()
    assert [p["id"] for p in history["items"]] == [first["id"], april["id"], fix["id"]]
    assert [p["unit_price_cents"] for p in history["items"]] == [2500, 2700, 2650], "nothing is overwritten"
    paged = (await registry.http.get(f"/providers/{pid}/price-lists?limit=2")).json()
    rest = (await registry.http.get(f"/providers/{pid}/price-lists?limit=2&cursor={paged['next_cursor']}")).json()
    assert [p["id"] for p in paged["items"] + rest["items"]] == [first["id"], april["id"], fix["id"]]
    assert rest["next_cursor"] is None

    async def in_force(on: str):  # noqa: ANN202
        r = await registry.http.get(f"/public/funders/091/categories/home_care/providers?date={on}", headers={})
        assert r.status_code == 200, r.text
        price = r.json()["items"][0]["price"]
        return price and price["unit_price_cents"]
    assert await in_force("2026-03-09") is None, "before the first list there is no price"
    assert await in_force("2026-03-10") == 2500
    assert await in_force("2026-03-31") == 2500
    assert await in_force("2026-04-01") == 2650, "of two lists from one day, the later publication"
    assert await in_force("2027-01-01") == 2650
    # who sees the history: the provider's staff, funder staff (their funder's lists), operator staff
    for who, seen in ((bearer("provider_charger", provider_id=pid), 3), (bearer("funder_finance", funder_id="091"), 3),
                      (bearer("funder_reporting", funder_id="092"), 0)):
        r = await registry.http.get(f"/providers/{pid}/price-lists", headers=who)
        assert r.status_code == 200 and len(r.json()["items"]) == seen, r.text
    r = await registry.http.get(f"/providers/{pid}/price-lists", headers=bearer("provider_manager", provider_id="x"))
    assert r.status_code == 404
    r = await registry.http.get(f"/providers/{pid}/price-lists", headers=bearer("client", voucher_id="v"))
    assert r.status_code == 403


async def test_price_changes_the_funder_must_approve(registry):  # noqa: ANN001
    await registry.funder("091")
    await registry.funder("092")
    await registry.rulebook("091", approval=True)
    pid = await registry.provider("Kotihoiva Oy")
    await registry.approve(pid)
    pending = (await registry.price(pid, 2500)).json()
    registry.app.state.clock.advance(minutes=1)
    rejected = (await registry.price(pid, 9900, effective_from=TODAY + timedelta(days=3))).json()
    assert pending["status"] == rejected["status"] == "pending_approval"
    assert pending["published_at"] is None
    assert await registry.published_events() == [], "nothing is announced before the funder approves"
    compared = (await registry.http.get("/public/funders/091/categories/home_care/providers", headers={})).json()
    assert compared["items"][0]["price"] is None, "a pending list is not in force"

    approver = bearer("funder_provider_approver", funder_id="091")
    for path, who in ((f"/price-lists/{pending['id']}/approve", bearer("funder_provider_approver", funder_id="092")),
                      (f"/price-lists/{pending['id']}/approve", bearer("provider_manager", provider_id=pid)),
                      ("/price-lists/nope/approve", approver)):
        r = await registry.http.post(path, headers=who)
        assert r.status_code in (403, 404), r.text
    r = await registry.http.post(f"/price-lists/{pending['id']}/approve", headers=approver)
    assert r.status_code == 200 and r.json()["status"] == "published" and r.json()["published_at"], r.text
    again = await registry.http.post(f"/price-lists/{pending['id']}/approve", headers=approver)
    assert again.status_code == 200 and again.json() == r.json(), "approving again changes nothing"
    grounds = {"grounds": "Hinta ylittää sääntökirjan enimmäishinnan."}
    assert reason(await registry.http.post(f"/price-lists/{pending['id']}/reject", headers=approver,
                                           json=grounds)) == (409, "price_list_not_pending")
    assert reason(await registry.http.post(f"/price-lists/{rejected['id']}/reject")) == (422, "grounds_required")
    assert reason(await registry.http.post(f"/price-lists/{rejected['id']}/reject", json={"grounds": " x "})) == \
        (422, "grounds_required")
    r = await registry.http.post(f"/price-lists/{rejected['id']}/reject", json=grounds)  # operator staff
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["grounds"] == grounds["grounds"]
    assert reason(await registry.http.post(f"/price-lists/{rejected['id']}/approve", headers=approver)) == \
        (409, "price_list_not_pending")
    events = await registry.published_events()
    assert [e["price_list_id"] for e in events] == [pending["id"]], "one event, for the approved list only"
    compared = (await registry.http.get("/public/funders/091/categories/home_care/providers?date=2026-04-01",
                                        headers={})).json()
    assert compared["items"][0]["price"]["unit_price_cents"] == 2500, "a rejected list never takes effect"
    history = (await registry.http.get(f"/providers/{pid}/price-lists")).json()["items"]
    assert [p["status"] for p in history] == ["published", "rejected"]


async def test_approving_late_may_not_reach_into_a_settled_month(registry):  # noqa: ANN001
    await registry.funder()
    await registry.rulebook("091", approval=True)
    pid = await registry.provider("Kotihoiva Oy")
    await registry.approve(pid)
    late = (await registry.price(pid, 2500)).json()
    registry.app.state.clock.advance(days=25)  # April 4th: March may be settled
    r = await registry.http.post(f"/price-lists/{late['id']}/approve")
    assert reason(r) == (422, "effective_date_in_past")
    assert await registry.published_events() == []
    assert (await registry.http.get(f"/providers/{pid}/price-lists")).json()["items"][0]["status"] == \
        "pending_approval"


# ------------------------------------------------------------------ the public comparison
async def _market(registry: Registry) -> dict[str, str]:
    """Funder 091 with providers A-F for home care; G approved by 092 only."""
    await registry.funder("091")
    await registry.funder("092")
    await registry.rulebook("091")
    await registry.rulebook("092")
    ids = {}
    spec = {  # name: (price, languages, municipalities served, service units)
        "A": (2500, ["fi"], [], [("A Kallio", "091")]),
        "B": (3000, ["fi", "sv"], ["049"], [("B Espoo", "049"), ("B Töölö", "091")]),
        "C": (2200, ["sv"], [], [("C Espoo", "049")]),
        "D": (2500, ["fi", "en"], ["091"], []),
        "E": (None, ["fi"], [], [("E Vantaa", "092")]),  # approved, no price yet
        "F": (1800, ["fi"], [], [("F", "091")]),
    }
    for name, (price, languages, municipalities, units) in spec.items():
        ids[name] = await registry.provider(f"{name} Hoiva Oy", languages=languages, municipalities=municipalities,
                                            units=units)
        await registry.approve(ids[name])
        if price:
            assert (await registry.price(ids[name], price)).status_code == 201
    ids["S"] = await registry.provider("S Keskeytetty Oy", units=[("S", "091")])
    await registry.approve(ids["S"], status="suspended", status_effective_from=TODAY - timedelta(days=1))
    ids["L"] = await registry.provider("L Keskeytyy Oy", units=[("L", "091")])  # suspended from next month
    await registry.approve(ids["L"], status="suspended", status_effective_from=date(2026, 4, 1))
    ids["R"] = await registry.provider("R Peruttu Oy")
    await registry.approve(ids["R"], status="revoked", status_effective_from=TODAY)
    ids["G"] = await registry.provider("G Muualla Oy")
    await registry.approve(ids["G"], "092")
    assert (await registry.price(ids["G"], 100, funder_id="092")).status_code == 201
    ids["H"] = await registry.provider("H Siivous Oy")
    await registry.approve(ids["H"], category="cleaning")  # another category
    return ids


async def _all_pages(registry: Registry, query: str, limit: int) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        url = f"/public/funders/091/categories/home_care/providers?{query}&limit={limit}"
        r = await registry.http.get(url + (f"&cursor={cursor}" if cursor else ""), headers={})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor, pages = r.json()["next_cursor"], pages + 1
        if cursor is None:
            return items
        assert pages < 20


async def test_the_comparison_orders_filters_and_computes_the_own_share(any_registry):  # noqa: ANN001
    registry = any_registry
    ids = await _market(registry)
    name_of = {v: k for k, v in ids.items()}
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=registry.app), base_url="http://registry")
    async with anonymous:
        r = await anonymous.get("/public/funders/091/categories/home_care/providers")  # no token at all
    assert r.status_code == 200, r.text
    by_price = [name_of[p["provider_id"]] for p in r.json()["items"]]
    # price, then id among equals (A and D both 25.00); no price last; suspended, revoked, others' out
    ad = sorted(["A", "D"], key=lambda n: ids[n])
    unpriced = sorted(["L", "E"], key=lambda n: ids[n])
    # price, then id among equals (A and D both 25.00), no price last (E, and L whose suspension
    # starts next month); suspended S, revoked R, 092's G and the cleaner H are not listed
    assert by_price == ["F", "C", *ad, "B", *unpriced], by_price
    first = r.json()["items"][by_price.index("B")]
    assert first | {"provider_id": None, "contact_email": None} == {
        "provider_id": None, "name": "B Hoiva Oy", "contact_email": None, "contact_phone": None,
        "languages": ["fi", "sv"], "service_units": [
            {"name": "B Espoo", "street_address": "Mannerheimintie 1", "postal_code": "00100",
             "municipality_code": "049"},
            {"name": "B Töölö", "street_address": "Mannerheimintie 1", "postal_code": "00100",
             "municipality_code": "091"}],
        "price": {"price_list_id": first["price"]["price_list_id"], "unit": "hour", "unit_price_cents": 3000,
                  "tariffs": {}, "effective_from": "2026-03-10"},
        "own_share_cents_per_unit": None, "own_share_cents_per_month": None}
    assert first["contact_email"].endswith("@example.fi")

    async def names(query: str, limit: int = 50) -> list[str]:
        return [name_of[p["provider_id"]] for p in await _all_pages(registry, query, limit)]

    # the date decides: L is suspended from next month, S and R were still in the register earlier
    assert "L" not in await names("date=2026-04-01")
    assert {"S", "R"} <= set(await names("date=2026-03-08"))
    assert not {"S", "R"} & set(await names("date=2026-03-10"))
    # own share: never negative; ties (all at zero) by id; monthly = per unit x units, rounded once
    items = await _all_pages(registry, "voucher_value_cents=2400&units_per_month=12.5&sort=own_share", 2)
    shares = [(name_of[p["provider_id"]], p["own_share_cents_per_unit"], p["own_share_cents_per_month"])
              for p in items]
    zero = sorted(["F", "C"], key=lambda n: ids[n])
    assert shares[:2] == [(n, 0, 0) for n in zero]
    assert shares[2:4] == [(n, 100, 1250) for n in ad]
    assert shares[4] == ("B", 600, 7500)
    assert shares[5:] == [(n, None, None) for n in unpriced]
    assert all(s[1] is None or s[1] >= 0 for s in shares)
    # pagination is stable across every page size, for every sort
    for sort in ("price", "name", "own_share"):
        whole = await names(f"voucher_value_cents=2400&sort={sort}")
        for limit in (1, 2, 3, 4):
            assert await names(f"voucher_value_cents=2400&sort={sort}", limit) == whole, (sort, limit)
    assert await names("sort=name") == sorted(await names("sort=name"), key=lambda n: f"{n} Hoiva Oy")
    # filters
    assert set(await names("municipality=049")) == {"B", "C"}, "a unit there or serving it"
    assert set(await names("municipality=091")) == {"A", "B", "D", "F", "L"}
    assert set(await names("language=sv")) == {"B", "C"}
    assert set(await names("language=sv&municipality=091")) == {"B"}
    assert await names("language=de") == []
    # without a voucher value there is no own share
    items = await _all_pages(registry, "units_per_month=20", 50)
    assert all(p["own_share_cents_per_month"] is None for p in items)
    # refusals
    base = "/public/funders/091/categories/home_care/providers"
    for query, want in (("?sort=own_share", (422, "voucher_value_required")),
                        ("?municipality=91", (422, "invalid_request")),
                        ("?voucher_value_cents=-1", (422, "invalid_number")),
                        ("?units_per_month=1.234", (422, "invalid_number")),
                        ("?sort=cheapest", (422, "invalid_request")),
                        ("?cursor=bm9wZQ", (400, "invalid_cursor"))):
        assert reason(await registry.http.get(base + query, headers={})) == want, query
    r = await registry.http.get(base + "?sort=price&limit=1", headers={})
    assert reason(await registry.http.get(base + f"?sort=name&cursor={r.json()['next_cursor']}", headers={})) == \
        (400, "invalid_cursor"), "a cursor belongs to its sort"
    assert reason(await registry.http.get("/public/funders/091/categories/astrology/providers", headers={})) == \
        (422, "unknown_category")
    assert reason(await registry.http.get("/public/funders/999/categories/home_care/providers", headers={})) == \
        (404, "funder_not_found")
    other = (await registry.http.get("/public/funders/092/categories/home_care/providers", headers={})).json()
    assert [p["provider_id"] for p in other["items"]] == [ids["G"]]
    cleaning = (await registry.http.get("/public/funders/091/categories/cleaning/providers", headers={})).json()
    assert [p["provider_id"] for p in cleaning["items"]] == [ids["H"]]


async def test_the_comparison_is_one_query_for_the_page_and_one_for_its_units(registry):  # noqa: ANN001
    await _market(registry)
    engine = registry.app.state.runtime.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        if "outbox" not in statement:  # the relay polls on the same engine meanwhile
            statements.append(statement)
    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        r = await registry.http.get("/public/funders/091/categories/home_care/providers?voucher_value_cents=2500"
                                    "&units_per_month=20&sort=own_share", headers={})
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert r.status_code == 200 and len(r.json()["items"]) == 7
    assert len(statements) == 2, statements
