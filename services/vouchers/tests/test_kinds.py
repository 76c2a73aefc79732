"""Voucher kinds: the income-related value engine (pure), the charging amounts of each kind in payments
(pure), and over HTTP on PostgreSQL + RabbitMQ: value tables (publish, immutability, calculator, the
income never stored), and issuing each kind."""
from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from payments.charging import domain as pay
from seteli_shared.auth import mint
from seteli_shared.clock import FixedClock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import DomainError
from seteli_shared.events import Envelope, FunderRegistered
from seteli_shared.logging import new_id
from seteli_shared.money import round_down_cents, round_up_cents
from vouchers import value_engine as ve
from vouchers.app import create_app
from vouchers.handlers import on_funder_registered
from vouchers.settings import VouchersSettings

GUIDE = ve.guideline_table(max_cents=3200, min_cents=700)


# ------------------------------------------------------------------ the value engine
def test_the_domain_example_household_of_one():
    # (1000 - 563) x 35 % = 152.95 EUR a month; 32.00 - 152.95 / 40 = 28.17625 -> 28.18 (up)
    assert ve.monthly_share(GUIDE, 1, 100000) == Decimal("15295")
    result = ve.value_per_unit(GUIDE, 1, 100000, Decimal(40))
    assert result.value_per_unit_cents == 2818
    assert result.monthly_share_cents == 15295 and result.income_limit_cents == 56300
    assert result.percentage == Decimal(35) and result.clamped is None


def test_rounding_is_in_the_clients_favour():
    assert round_up_cents(Decimal("2817.001")) == 2818 and round_up_cents(Decimal("2817")) == 2817
    assert round_down_cents(Decimal("15295.99")) == 15295
    # a share of 1 cent over 3 units: 3200 - 0.333.. -> 3199.67 -> 3200 (up)
    assert ve.value_per_unit(GUIDE, 1, 56300 + 3, Decimal(3)).value_per_unit_cents == 3200


def test_income_at_or_under_the_limit_gives_the_maximum():
    for income in (0, 56300):
        r = ve.value_per_unit(GUIDE, 1, income, Decimal(40))
        assert (r.value_per_unit_cents, r.clamped, r.monthly_share_cents) == (3200, "max", 0)


def test_a_high_income_is_clamped_to_the_minimum():
    r = ve.value_per_unit(GUIDE, 1, 1_000_000, Decimal(40))
    assert (r.value_per_unit_cents, r.clamped) == (700, "min")


@pytest.mark.parametrize("size,limit,pct", [(1, 56300, "35"), (2, 103900, "22"), (3, 162800, "18"),
                                            (4, 201400, "15"), (5, 243800, "13"), (6, 279900, "11"),
                                            (7, 279900 + 34200, "10"), (8, 279900 + 2 * 34200, "9")])
def test_limits_and_percentages_by_household_size(size, limit, pct):  # noqa: ANN001
    assert ve.limit_and_percentage(GUIDE, size) == (limit, Decimal(pct))


def test_a_very_large_household_never_gets_a_negative_percentage():
    assert ve.limit_and_percentage(GUIDE, 30)[1] == Decimal(0)
    assert ve.value_per_unit(GUIDE, 30, 10_000_000, Decimal(10)).value_per_unit_cents == 3200


def test_household_of_seven():
    # limit 3,141 EUR, 10 %: income 4,000 -> share 85.90; 20 h: 32.00 - 4.295 = 27.705 -> 27.71
    assert ve.value_per_unit(GUIDE, 7, 400000, Decimal(20)).value_per_unit_cents == 2771


def test_versions_give_their_own_values():
    v2026 = ve.guideline_table(max_cents=2700)
    v2027 = ve.guideline_table(max_cents=3000)
    assert ve.value_per_unit(v2026, 2, 150000, Decimal(20)).value_per_unit_cents == 2193  # 27.00 - 101.42/20 = 21.929 -> 21.93
    assert ve.value_per_unit(v2027, 2, 150000, Decimal(20)).value_per_unit_cents == 2493


def test_bad_tables_and_inputs_are_refused_with_reasons():
    with pytest.raises(DomainError) as e:
        ve.check_table(ve.ValueTable(700, 2700, GUIDE.income_limits_cents, GUIDE.percentages, 34200, Decimal(1)))
    assert e.value.reason == "invalid_value_table"
    with pytest.raises(DomainError) as e:
        ve.check_table(ve.ValueTable(2700, 700, GUIDE.income_limits_cents[:5], GUIDE.percentages, 34200, Decimal(1)))
    assert e.value.reason == "invalid_value_table"
    with pytest.raises(DomainError) as e:
        ve.value_per_unit(GUIDE, 0, 1000, Decimal(1))
    assert e.value.reason == "invalid_household_size"
    with pytest.raises(DomainError) as e:
        ve.value_per_unit(GUIDE, 1, 1000, Decimal(0))
    assert e.value.reason == "invalid_units"


# ------------------------------------------------------------------ payments: the amounts of each kind
def _terms(kind: str = "service_voucher", **over) -> pay.VoucherTerms:  # noqa: ANN003
    base = dict(funder_id="091", category="home_care", units_per_period_x100=2000, period="month",
                value_per_unit_cents=1500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                provider_id="p", kind=kind)
    return pay.VoucherTerms(**{**base, **over})


APPROVED = pay.ApprovalState(approval_id="a", approved_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
TODAY = date(2026, 3, 10)


def _charge(terms, units="4", price=2500, category=None, provider="p", money_used=0):  # noqa: ANN001, ANN202
    req = pay.ChargeRequest(provider, date(2026, 3, 9), int(Decimal(units) * 100), price, category=category)
    return pay.validate_charge(terms, APPROVED, 0, req, TODAY, money_used_cents=money_used)


def test_service_voucher_and_income_related_pay_up_to_the_value():
    for kind in ("service_voucher", "income_related"):
        a = _charge(_terms(kind))
        assert (a.amount_cents, a.own_share_cents, a.client_fee_cents) == (6000, 4000, None)
    cheap = _charge(_terms("income_related", value_per_unit_cents=2818), price=2500)
    assert (cheap.amount_cents, cheap.own_share_cents) == (10000, 0)  # never above the provider's price


def test_client_voucher_covers_the_price_up_to_the_maximum_and_records_the_fee():
    terms = _terms("client_voucher", value_per_unit_cents=3000, max_value_per_unit_cents=3000, client_fee_cents=250)
    a = _charge(terms, price=2500)
    assert (a.amount_cents, a.own_share_cents, a.client_fee_cents) == (10000, 0, 1000)
    a = _charge(terms, price=3500)
    assert (a.amount_cents, a.own_share_cents, a.client_fee_cents) == (12000, 0, 1000)


def test_personal_budget_spends_money_across_categories_and_providers():
    terms = _terms("personal_budget", units_per_period_x100=0, value_per_unit_cents=0, provider_id=None,
                   budget_cents=50000, categories=("home_care", "cleaning"))
    a = _charge(terms, units="4", price=2500, category="cleaning", provider="any-approved")
    assert (a.amount_cents, a.own_share_cents) == (10000, 0)
    with pytest.raises(DomainError) as e:
        _charge(terms, units="4", price=2500, money_used=45000)
    assert e.value.reason == "budget_exceeded" and e.value.details["budget_left_cents"] == 5000
    with pytest.raises(DomainError) as e:
        _charge(terms, category="home_nursing")
    assert e.value.reason == "category_not_on_voucher"
    with pytest.raises(DomainError) as e:
        _charge(terms, price=None)
    assert e.value.reason == "unit_price_required"


def test_other_kinds_charge_only_their_own_category():
    with pytest.raises(DomainError) as e:
        _charge(_terms(), category="cleaning")
    assert e.value.reason == "category_not_on_voucher"


# ------------------------------------------------------------------ over HTTP
F1, F2 = "091", "092"


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f't:{role}:{new_id()[:6]}', [role], **claims)}"}


DM1 = bearer("funder_decision_maker", funder_id=F1)
DM2 = bearer("funder_decision_maker", funder_id=F2)
FINANCE1 = bearer("funder_finance", funder_id=F1)
TABLE = {"category": "home_care", "table_version": "2026.1", "max_value_per_unit_cents": 3200,
         "min_value_per_unit_cents": 700, "income_limits_cents": [56300, 103900, 162800, 201400, 243800, 279900],
         "percentages": ["35", "22", "18", "15", "13", "11"], "extra_person_limit_cents": 34200,
         "extra_person_points": "1"}
#: an income figure that appears nowhere else
INCOME = 123457


@pytest.fixture
async def svc(pg, namespace, amqp_url):  # noqa: ANN001
    settings = VouchersSettings(environment="test", database_url=await pg.create("kinds"), amqp_url=amqp_url,
                                bus_namespace=namespace, relay_idle_seconds=0.05)
    app = create_app(settings)
    app.state.clock = FixedClock(datetime.now(timezone.utc).replace(microsecond=0))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                 base_url="http://vouchers"))
        for funder in (F1, F2):
            event = FunderRegistered(funder_id=funder, name=f"Kunta {funder}", kind="municipality",
                                     operator_fee_rate=Decimal("0.05"), registered_at=app.state.clock.now())
            async with unit_of_work(app.state.runtime.sessions) as session:
                await on_funder_registered(session, Envelope.wrap(event, "registry"), event)
        yield app, http


def decision(app, **over) -> dict:  # noqa: ANN001, ANN003
    today = app.state.clock.today()
    return {"decision_ref": f"D-{new_id()[:12]}", "client_ref": f"c-{new_id()[:8]}", "category": "home_care",
            "units_per_period": "40", "valid_from": (today - timedelta(days=3)).isoformat(),
            "valid_until": (today + timedelta(days=300)).isoformat(), **over}


async def test_value_tables_are_published_immutable_and_read(svc):  # noqa: ANN001
    app, http = svc
    r = await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=DM1)
    assert r.status_code == 201, r.text
    assert r.json()["percentages"] == ["35", "22", "18", "15", "13", "11"] or r.json()["percentages"][0] in (35, "35")
    assert (await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=DM1)).status_code == 200
    r = await http.post(f"/funders/{F1}/value-tables", json={**TABLE, "min_value_per_unit_cents": 800}, headers=DM1)
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "value_table_version_exists")
    r = await http.post(f"/funders/{F1}/value-tables", json={**TABLE, "min_value_per_unit_cents": 5000,
                                                             "max_value_per_unit_cents": 4000,
                                                             "table_version": "bad"}, headers=DM1)
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "invalid_value_table")
    # another funder's decision maker may not publish for F1 (404: another tenant's)
    assert (await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=DM2)).status_code == 404
    assert (await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=FINANCE1)).status_code == 403
    page = (await http.get(f"/funders/{F1}/value-tables", headers=FINANCE1)).json()
    assert [t["table_version"] for t in page["items"]] == ["2026.1"]
    one = await http.get(f"/funders/{F1}/value-tables/home_care/2026.1", headers=FINANCE1)
    assert one.status_code == 200 and one.json()["max_value_per_unit_cents"] == 3200
    assert (await http.get(f"/funders/{F1}/value-tables/home_care/1999", headers=FINANCE1)).status_code == 404


async def test_the_calculator_previews_the_value_and_keeps_no_income(svc, capsys):  # noqa: ANN001
    app, http = svc
    assert (await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=DM1)).status_code == 201
    r = await http.post(f"/funders/{F1}/value-tables/home_care/2026.1/calculate", headers=DM1,
                        json={"household_size": 1, "gross_monthly_income_cents": 100000, "units_per_month": "40"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["value_per_unit_cents"], body["monthly_share_cents"], body["clamped"]) == (2818, 15295, None)
    r = await http.post(f"/funders/{F1}/value-tables/home_care/2026.1/calculate", headers=DM1,
                        json={"household_size": 1, "gross_monthly_income_cents": INCOME, "units_per_month": "40"})
    assert r.status_code == 200 and str(INCOME) not in r.text
    # issue an income-related voucher with the same income: the voucher keeps version, size and value only
    r = await http.post("/vouchers", headers=DM1, json=decision(
        app, kind="income_related", value_table_version="2026.1", household_size=1,
        gross_monthly_income_cents=INCOME))
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["kind"], v["value_table_version"], v["household_size"]) == ("income_related", "2026.1", 1)
    assert v["value_per_unit_cents"] == ve.value_per_unit(GUIDE, 1, INCOME, Decimal(40)).value_per_unit_cents
    assert "gross_monthly_income_cents" not in v and str(INCOME) not in r.text
    # nowhere in the database (every table, every column as text), nor in the logs
    async with app.state.runtime.sessions() as session:
        tables = (await session.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))).scalars().all()
        for table in tables:
            hits = (await session.execute(sa.text(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :needle'), {"needle": f"%{INCOME}%"})).scalar()
            assert hits == 0, table
    out = capsys.readouterr()
    assert str(INCOME) not in out.out + out.err


async def test_an_income_related_voucher_needs_a_published_table(svc):  # noqa: ANN001
    app, http = svc
    r = await http.post("/vouchers", headers=DM1, json=decision(
        app, kind="income_related", value_table_version="2030.1", household_size=2, gross_monthly_income_cents=1))
    assert (r.status_code, r.json()["error"]["reason"]) == (422, "unknown_value_table")
    r = await http.post("/vouchers", headers=DM1, json=decision(app, kind="income_related", value_per_unit_cents=2500))
    assert r.status_code == 422


async def test_each_kind_is_issued_with_its_terms_and_announced(svc):  # noqa: ANN001
    app, http = svc
    assert (await http.post(f"/funders/{F1}/value-tables", json=TABLE, headers=DM1)).status_code == 201
    bodies = {
        "service_voucher": decision(app, value_per_unit_cents=2500),
        "income_related": decision(app, kind="income_related", value_table_version="2026.1", household_size=7,
                                   gross_monthly_income_cents=400000, units_per_period="20"),
        "client_voucher": decision(app, kind="client_voucher", max_value_per_unit_cents=3000, client_fee_cents=250),
        "personal_budget": {**decision(app, kind="personal_budget", budget_cents=80000,
                                       categories=["home_care", "cleaning"]), "units_per_period": None},
    }
    bodies["personal_budget"].pop("units_per_period")
    issued = {}
    for kind, body in bodies.items():
        r = await http.post("/vouchers", headers=DM1, json=body)
        assert r.status_code == 201, (kind, r.text)
        issued[kind] = r.json()
        assert issued[kind]["kind"] == kind
        # the same decision again: the same voucher (200)
        assert (await http.post("/vouchers", headers=DM1, json=body)).status_code == 200
    assert issued["service_voucher"]["value_per_unit_cents"] == 2500
    assert issued["income_related"]["value_per_unit_cents"] == 2771
    assert issued["client_voucher"]["value_per_unit_cents"] == 3000
    assert issued["client_voucher"]["client_fee_cents"] == 250
    assert issued["personal_budget"]["budget_cents"] == 80000
    assert issued["personal_budget"]["categories"] == ["home_care", "cleaning"]
    budget_view = (await http.get(f"/vouchers/{issued['personal_budget']['id']}", headers=DM1)).json()
    assert (budget_view["usage"]["value_used_cents"], budget_view["usage"]["value_left_cents"]) == (0, 80000), \
        "a personal budget shows the money left, not units"
    # the events carry the kind's terms
    async with app.state.runtime.sessions() as session:
        rows = (await session.execute(sa.text("SELECT body FROM outbox"))).scalars().all()
    events = [Envelope.model_validate_json(p if isinstance(p, (str, bytes)) else str(p)).data for p in rows]
    by_id = {e["voucher_id"]: e for e in events if "voucher_id" in e}
    assert by_id[issued["client_voucher"]["id"]]["client_fee_cents"] == 250
    assert by_id[issued["personal_budget"]["id"]]["categories"] == ["home_care", "cleaning"]
    assert by_id[issued["income_related"]["id"]]["value_table_version"] == "2026.1"
    # a kind's terms that do not fit it are refused
    r = await http.post("/vouchers", headers=DM1, json=decision(app, kind="client_voucher", value_per_unit_cents=1))
    assert r.status_code == 422
    r = await http.post("/vouchers", headers=DM1, json={**decision(app, kind="personal_budget", budget_cents=1,
                                                                   categories=["cleaning"])})
    assert r.status_code == 422
