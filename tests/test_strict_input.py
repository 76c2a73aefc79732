"""No input gives a 500, and numbers and dates are read strictly: the four services in process, each on its own
PostgreSQL database and the real RabbitMQ, called over HTTP (ASGI) as their clients call them.

- The two 500s found from outside: a deeply nested JSON body on ``POST /charges/bulk`` (the parser's recursion)
  and ``service_date`` 0001-01-01 (date arithmetic beyond what dates hold). Both 422 with their reason now.
- JSON bodies beyond the limits (depth, items, a string's length) are refused before they are parsed.
- Units and amounts are ASCII digits with at most one decimal point (a JSON number, or a string): every other
  spelling is 422 ``invalid_number`` (or ``number_out_of_range``), and a refused charge charges nothing.
- The same for cents, counts, rates, dates and query parameters in every service, and for the CSV file.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from contextlib import AsyncExitStack
from datetime import date, datetime, timezone
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.events import Envelope, ProviderApproved, VoucherIssued, VoucherProviderChosen
from seteli_shared.manifest import NAMES
from seteli_shared.messaging import InboxMessage
from seteli_shared.testing import delete_namespace, eventually, make_settings

OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
PROVIDER = "p-strict"
CHARGER = {"Authorization":
           f"Bearer {mint('t:charger', ['provider_charger', 'provider_manager'], provider_id=PROVIDER)}"}
DECIDER = {"Authorization": f"Bearer {mint('t:dm', ['funder_decision_maker'], funder_id='091')}"}
FINANCE = {"Authorization": f"Bearer {mint('t:fin', ['funder_finance'], funder_id='091')}"}
CLIENT = {"Authorization": f"Bearer {mint('t:client', ['client'], voucher_id='v-strict')}"}
JSON = {"content-type": "application/json"}
TODAY = date(2026, 6, 20)


class Services:
    def __init__(self, clients: dict[str, httpx.AsyncClient], apps: dict):  # noqa: ANN001
        self.clients, self.apps = clients, apps

    def __getitem__(self, service: str) -> httpx.AsyncClient:
        return self.clients[service]

    async def charge(self, ref: str, units: object = "1", raw: bytes | None = None, **fields: object) -> httpx.Response:
        body = {"voucher_id": "v-strict", "provider_reference": ref, "service_date": "2026-06-19", "units": units,
                **fields}
        content = raw if raw is not None else json.dumps(body).encode()
        return await self.clients["payments"].post("/charges", content=content, headers={**CHARGER, **JSON})

    async def charged(self) -> dict[str, str]:
        """provider reference -> units, of every charge the provider has."""
        r = await self.clients["payments"].get("/charges", params={"limit": 500}, headers=CHARGER)
        assert r.status_code == 200, r.text
        return {c["provider_reference"]: c["units"] for c in r.json()["items"]}


@pytest.fixture(scope="module")
async def services(postgres_admin_dsn, amqp_url):  # noqa: ANN001
    from conftest import PostgresDatabases  # the root conftest

    dbs = PostgresDatabases(postgres_admin_dsn)
    # "p" between the two numbers: glued together they made a run of ten digits, a personal identity code now
    # and then (once in ~850), and outside systems' broker users are named after the namespace
    ns = f"strict{os.getpid()}p{int(time.time()) % 100000}"
    async with AsyncExitStack() as stack:
        stack.push_async_callback(delete_namespace, amqp_url, ns, [f"{ns}.{n}" for n in NAMES])
        stack.push_async_callback(dbs.drop_all)
        clients, apps = {}, {}
        for name in NAMES:
            settings_module = importlib.import_module(f"{name}.settings")
            cls = next(v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "ServiceSettings")
            app = importlib.import_module(f"{name}.app").create_app(cls(
                environment="test", database_url=await dbs.create(name), amqp_url=amqp_url, bus_namespace=ns,
                relay_idle_seconds=0.05))
            app.state.clock = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
            clients[name] = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=f"http://{name}",
                timeout=60))
        bus = Bus(make_settings(service_name="test", bus_namespace=ns, amqp_url=amqp_url,
                                database_url="sqlite+aiosqlite://"))
        await bus.connect()
        stack.push_async_callback(bus.close)
        await _voucher_heard_by_payments(apps["payments"], bus)
        yield Services(clients, apps)


async def _voucher_heard_by_payments(app, bus: Bus) -> None:  # noqa: ANN001
    """Voucher ``v-strict`` (50,000 h a month at 25.00 EUR/h for 2026), its client having chosen ``p-strict``."""
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [(ProviderApproved(approval_id="ap-strict", provider_id=PROVIDER, funder_id="091", category="home_care",
                                approved_at=at), "registry"),
              (VoucherIssued(voucher_id="v-strict", funder_id="091", client_ref="c-strict", decision_ref="D-strict",
                             category="home_care", unit="hour", units_per_period=Decimal("50000"), period="month",
                             value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                             issued_at=at), "vouchers"),
              (VoucherProviderChosen(voucher_id="v-strict", funder_id="091", provider_id=PROVIDER, category="home_care",
                                     chosen_at=at), "vouchers")]
    for event, source in events:  # one at a time: each depends on the one before
        env = Envelope.wrap(event, source)
        await bus.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id, type_=env.type)

        async def taken(message_id: str = env.id) -> bool:
            async with app.state.runtime.sessions() as session:
                return bool((await session.execute(select(InboxMessage.message_id).where(
                    InboxMessage.message_id == message_id))).first())

        await eventually(taken)


def _refused(r: httpx.Response, reason: str, status: int = 422) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["reason"] == reason, err
    return err


# ------------------------------------------------------------------ the two 500s found from outside
async def test_a_deeply_nested_json_body_on_bulk_charges_is_422_json_too_deep_not_a_500(services):  # noqa: ANN001
    for body in (b"[" * 100_000 + b"]" * 100_000, b"\xef\xbb\xbf" + b"[" * 900 + b"]" * 900,
                 b'[{"voucher_id": "v-strict", "provider_reference": "deep", "service_date": "2026-06-19", '
                 b'"units": "1", "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}]"):
        r = await services["payments"].post("/charges/bulk", content=body, headers={**CHARGER, **JSON})
        _refused(r, "json_too_deep")
    assert "deep" not in await services.charged()


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1899-12-31", "2200-01-01"])
async def test_a_service_date_outside_the_dates_of_business_is_422_not_a_500(services, day):  # noqa: ANN001
    err = _refused(await services.charge(f"day-{day}", service_date=day), "date_out_of_range")
    assert err["details"]["errors"][0]["loc"] == ["body", "service_date"]
    r = await services["payments"].post("/charges/bulk", headers=CHARGER, json=[
        {"voucher_id": "v-strict", "provider_reference": f"bulk-{day}", "service_date": day, "units": "1"}])
    assert r.status_code == 200 and r.json()["results"][0]["reason"] == "date_out_of_range", r.text
    r = await services["payments"].get("/charges", params={"service_date_from": day}, headers=CHARGER)
    _refused(r, "date_out_of_range")
    assert not {f"day-{day}", f"bulk-{day}"} & set(await services.charged())


@pytest.mark.parametrize("month, reason", [("9999-12", "date_out_of_range"), ("0000-01", "invalid_month"),
                                           ("2200-01", "date_out_of_range")])
async def test_an_invoice_month_beyond_the_dates_of_business_is_422_not_a_500(services, month, reason):  # noqa: ANN001
    """Found probing the path's pattern (a 500 before): 9999-12 had no next month to end the invoice at."""
    _refused(await services["payments"].get(f"/funders/091/invoices/{month}", headers=OPERATOR), reason)
    assert (await services["payments"].get("/funders/091/invoices/2199-12", headers=OPERATOR)).status_code == 200


# ------------------------------------------------------------------ JSON bodies beyond the limits
async def test_json_bodies_beyond_the_limits_are_refused_before_they_are_parsed(services):  # noqa: ANN001
    funders = services["registry"]

    def funder(extra: bytes) -> bytes:
        return b'{"funder_id": "092", "name": "Espoo", "kind": "municipality", "x": ' + extra + b"}"

    # 32 levels in all (the object and 31 lists) pass the guard (the model then refuses the unknown field); 33 do not
    r = await funders.post("/funders", content=funder(b"[" * 31 + b"]" * 31), headers={**OPERATOR, **JSON})
    _refused(r, "invalid_request")
    r = await funders.post("/funders", content=funder(b"[" * 32 + b"]" * 32), headers={**OPERATOR, **JSON})
    _refused(r, "json_too_deep")
    r = await funders.post("/funders", content=funder(b'"' + b"a" * 40_000 + b'"'), headers={**OPERATOR, **JSON})
    _refused(r, "json_string_too_long")
    long_ref = {"voucher_id": "v-strict", "provider_reference": "x" * 40_000, "service_date": "2026-06-19",
                "units": "1"}
    r = await services["payments"].post("/charges/bulk", json=[long_ref], headers=CHARGER)
    _refused(r, "json_string_too_long")
    r = await services["payments"].post("/charges/bulk", content=b"[" + b"0," * 100_001 + b"0]",
                                        headers={**CHARGER, **JSON})
    _refused(r, "json_too_many_items")
    assert (await funders.get("/funders/092", headers=OPERATOR)).status_code == 404  # nothing registered


# ------------------------------------------------------------------ units
@pytest.mark.parametrize("units, stored", [(4, "4.00"), ("4.5", "4.50"), (4.5, "4.50"), ("4.50", "4.50"),
                                           ("0.25", "0.25"), (" 2 ", "2.00"), (10000, "10000.00")])
async def test_units_are_a_json_number_or_plain_digits_with_one_decimal_point(services, units, stored):  # noqa: ANN001
    ref = f"ok-{units!r}"
    r = await services.charge(ref, units)
    assert r.status_code == 201, r.text
    assert (await services.charged())[ref] == stored


REFUSED_UNITS = [
    ('"1_0"', "invalid_number"), ('"\uff11\uff10"', "invalid_number"), ('"\u0661\u0660"', "invalid_number"),
    ('"\u0967\u0966"', "invalid_number"), ('"4e2"', "invalid_number"), ("4e2", "invalid_number"),
    ("4E-1", "invalid_number"), ("NaN", "invalid_number"), ("Infinity", "invalid_number"),
    ("-Infinity", "invalid_number"), ('"NaN"', "invalid_number"), ('"Infinity"', "invalid_number"),
    ("1.0000000001", "invalid_number"), ('"1.005"', "invalid_number"), ("1.0000000000000001", "invalid_number"),
    ("true", "invalid_number"), ('"+4"', "invalid_number"), ('"-4"', "invalid_number"), ('"4 0"', "invalid_number"),
    ('"4,5"', "invalid_number"), ('"4\u00a0"', "invalid_number"), ('"0x10"', "invalid_number"),
    ('""', "invalid_number"),
    ('"99999999999999999999999"', "number_out_of_range"), ("99999999999999999999999", "number_out_of_range"),
    ("9223372036854775808", "number_out_of_range"), ("9" * 5000, "number_out_of_range"),
    ('"%s"' % ("9" * 5000), "number_out_of_range"), ("0." + "1" * 5000, "invalid_number"),
]


@pytest.mark.parametrize("written, reason", REFUSED_UNITS, ids=[w[:24] for w, _r in REFUSED_UNITS])
async def test_units_written_any_other_way_are_refused_and_charge_nothing(services, written, reason):  # noqa: ANN001
    ref = f"no-{len(written)}-{written[:40]}"
    raw = ('{"voucher_id": "v-strict", "provider_reference": %s, "service_date": "2026-06-19", "units": %s}'
           % (json.dumps(ref), written)).encode()
    _refused(await services.charge(ref, raw=raw), reason)
    assert ref not in await services.charged()


# ------------------------------------------------------------------ cents, counts, rates, dates, queries: every service
def _voucher(**terms: object) -> dict:
    return {"decision_ref": "D-s-1", "client_ref": "c-s-1", "category": "home_care", "units_per_period": "20",
            "value_per_unit_cents": 2500, "valid_from": "2026-06-01", "valid_until": "2027-05-31", **terms}


def _funder(**terms: object) -> dict:
    return {"funder_id": "093", "name": "Vantaa", "kind": "municipality", **terms}


STRICT_EVERYWHERE = [
    # vouchers: cents, units, counts, dates of a decision
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(value_per_unit_cents="2_500"), "invalid_number"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(value_per_unit_cents=2500.5), "invalid_number"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(value_per_unit_cents=True), "invalid_number"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(value_per_unit_cents=3_000_000_000), "number_out_of_range"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(units_per_period="\uff12\uff10"), "invalid_number"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(valid_from="0001-01-01"), "date_out_of_range"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(valid_until="2026-6-1"), "invalid_date"),
    ("vouchers", "POST", "/vouchers", DECIDER, _voucher(kind="income_related", value_per_unit_cents=None,
                                                        value_table_version="2026.1", household_size="\u0662",
                                                        gross_monthly_income_cents=100000), "invalid_number"),
    ("vouchers", "GET", "/vouchers?limit=1_0", DECIDER, None, "invalid_number"),
    # registry: a fee rate, days, cents of a price list, dates, the public comparison's query
    ("registry", "POST", "/funders", OPERATOR, _funder(operator_fee_rate="0.0_5"), "invalid_number"),
    ("registry", "POST", "/funders", OPERATOR, _funder(operator_fee_rate="5e-2"), "invalid_number"),
    ("registry", "POST", "/funders", OPERATOR, _funder(operator_fee_rate=0.123456), "invalid_number"),
    ("registry", "POST", "/funders", OPERATOR, _funder(settlement_days="１４"), "invalid_number"),
    ("registry", "POST", "/funders", OPERATOR, _funder(charge_deadline_days=90.0), "invalid_number"),
    ("registry", "POST", f"/providers/{PROVIDER}/price-lists", CHARGER,
     {"funder_id": "091", "category": "home_care", "unit_price_cents": 3_000_000_000,
      "effective_from": "2026-06-20"}, "number_out_of_range"),
    ("registry", "POST", f"/providers/{PROVIDER}/price-lists", CHARGER,
     {"funder_id": "091", "category": "home_care", "unit_price_cents": 2500, "effective_from": "0001-01-01"},
     "date_out_of_range"),
    ("registry", "GET", "/public/funders/091/categories/home_care/providers?units_per_month=1e2", None, None,
     "invalid_number"),
    ("registry", "GET", "/public/funders/091/categories/home_care/providers?voucher_value_cents=%EF%BC%91%EF%BC%90",
     None, None, "invalid_number"),
    ("registry", "GET", "/public/funders/091/categories/home_care/providers?date=0001-01-01", None, None,
     "date_out_of_range"),
    ("registry", "GET", "/public/providers/p-strict?voucher_value_cents=99999999999999999999", None, None,
     "number_out_of_range"),
    # payments: amounts, booking days, corrections
    ("payments", "POST", "/funders/091/payments", OPERATOR,
     {"amount_cents": "1_000", "booked_on": "2026-06-19", "bank_reference": "ref-1"}, "invalid_number"),
    ("payments", "POST", "/funders/091/payments", OPERATOR,
     {"amount_cents": 1000, "booked_on": "2200-01-01", "bank_reference": "ref-1"}, "date_out_of_range"),
    ("payments", "POST", "/charges/c-none/corrections", FINANCE, {"reason": "wrong_price", "amount_cents": "１"},
     "invalid_number"),
    ("payments", "GET", "/charges?limit=%EF%BC%95", CHARGER, None, "invalid_number"),
    ("payments", "GET", "/charges?service_date_to=2026-06-1", CHARGER, None, "invalid_date"),
    # reporting: a rating
    ("reporting", "POST", "/feedback", CLIENT, {"rating": True}, "invalid_number"),
    ("reporting", "POST", "/feedback", CLIENT, {"rating": "\u0665"}, "invalid_number"),
    ("reporting", "POST", "/feedback", CLIENT, {"rating": 4.0}, "invalid_number"),
]


@pytest.mark.parametrize("service, method, path, headers, body, reason", STRICT_EVERYWHERE,
                         ids=[f"{s}-{m}-{p.split('?')[0]}-{i}" for i, (s, m, p, *_r) in enumerate(STRICT_EVERYWHERE)])
async def test_cents_counts_rates_and_dates_are_strict_in_every_service(  # noqa: ANN001
        services, service, method, path, headers, body, reason):  # noqa: ANN001
    r = await services[service].request(method, path, json={k: v for k, v in body.items() if v is not None}
                                        if body is not None else None, headers=headers or {})
    _refused(r, reason)


async def test_nothing_refused_above_was_stored(services):  # noqa: ANN001
    assert (await services["registry"].get("/funders/093", headers=OPERATOR)).status_code == 404
    r = await services["vouchers"].get("/vouchers", params={"decision_ref": "D-s-1"}, headers=DECIDER)
    assert r.status_code == 200 and r.json()["items"] == [], r.text


# ------------------------------------------------------------------ the CSV file
async def test_a_csv_file_takes_a_decimal_comma_and_grouped_thousands_and_nothing_looser(services):  # noqa: ANN001
    rows = [
        "voucher_id;provider_reference;service_date;units;unit_price",
        "v-strict;csv-1;19.6.2026;1,5;",          # 2: decimal comma
        "v-strict;csv-2;2026-06-19;2.25;",        # 3: decimal point
        "v-strict;csv-3;2026-06-19;1;1 000,00",   # 4: thousands grouped (then above the voucher's price list? none)
        "v-strict;csv-4;2026-06-19;1_0;",         # 5: underscore
        "v-strict;csv-5;2026-06-19;\uff11\uff10;",  # 6: full-width digits
        "v-strict;csv-6;2026-06-19;1e1;",         # 7: exponent
        "v-strict;csv-7;2026-06-19;NaN;",         # 8
        "v-strict;csv-8;2026-06-19;1 0;",         # 9: a space that groups no thousands
        "v-strict;csv-9;2026-06-19;-1;",          # 10: a sign
        "v-strict;csv-10;2026-06-19;1,5,5;",      # 11: two separators
        "v-strict;csv-11;2026-06-19;1;10 00,00",  # 12: a group of two
        "v-strict;csv-12;1.1.0001;1;",            # 13: a Finnish date outside the dates of business
        "v-strict;csv-13;\uff11.6.2026;1;",       # 14: a full-width day
        "v-strict;csv-14;2026-06-19;1,255;",      # 15: three decimals
    ]
    body = ("\r\n".join(rows) + "\r\n").encode()
    r = await services["payments"].post("/charges/bulk", content=body, headers={**CHARGER, "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    got = {x["line"]: (x["status"], x["reason"]) for x in r.json()["results"]}
    assert got[2] == got[3] == got[4] == ("accepted", None), got
    for line in range(5, 13):
        assert got[line] == ("refused", "invalid_number_or_date"), (line, got[line])
    assert got[13] == ("refused", "date_out_of_range"), got[13]
    assert got[14] == ("refused", "invalid_date"), got[14]
    assert got[15] == ("refused", "invalid_number"), got[15]
    charged = await services.charged()
    assert (charged["csv-1"], charged["csv-2"], charged["csv-3"]) == ("1.50", "2.25", "1.00")
    assert not {f"csv-{n}" for n in range(4, 15)} & set(charged)
