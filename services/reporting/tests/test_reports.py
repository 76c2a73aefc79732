"""The monitoring reports, from events that flow through the real broker into the reporting service
on PostgreSQL, read over HTTP as a funder's controller and the operator's analyst would: the monthly
report (JSON and CSV), price development (the seed's 34 providers, 27.47 -> 27.13 EUR/h), charts,
clients' feedback, redeliveries, and a rebuild from the archive that gives the same read models."""
from __future__ import annotations

import uuid

import asyncio
import csv
import io
import itertools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from reporting import usecases
from reporting.app import create_app
from reporting.models import READ_MODELS, ReceivedEvent
from reporting.settings import ReportingSettings
from seteli_shared.auth import mint
from seteli_shared.bus import Bus
from seteli_shared.clock import FixedClock
from seteli_shared.errors import Conflict
from seteli_shared.events import (ChargeAccepted, ChargeCancelled, ChargeCorrected, ChargeSettled, Envelope, Event,
                                  PriceListPublished, ProviderApproved, ProviderSuspended, VoucherIssued,
                                  VoucherProviderChosen, VoucherRevoked)
from seteli_shared.testing import eventually, make_settings

NOV = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)
_ids = itertools.count(1)


def nid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": "Bearer " + mint(f"test:{role}", [role], **claims)}


OPERATOR = bearer("operator")
CONTROLLER = bearer("funder_reporting", funder_id="091")
FINANCE_049 = bearer("funder_finance", funder_id="049")


# ------------------------------------------------------------------ events
def approved(funder: str, provider: str, category: str, at: datetime = NOV - timedelta(days=60)) -> ProviderApproved:
    return ProviderApproved(approval_id=f"a-{funder}-{provider}-{category}", provider_id=provider, funder_id=funder,
                            category=category, approved_at=at)


def price(funder: str, provider: str, category: str, cents: int, effective: date) -> PriceListPublished:
    return PriceListPublished(price_list_id=nid("pl"), provider_id=provider, funder_id=funder, category=category,
                              unit="hour", unit_price_cents=cents, effective_from=effective,
                              published_at=datetime.combine(effective, datetime.min.time(), timezone.utc))


def issued(funder: str, voucher: str, client: str, category: str, age_band: str | None = None) -> VoucherIssued:
    extra = {"age_band": age_band} if age_band and "age_band" in VoucherIssued.model_fields else {}
    return VoucherIssued(voucher_id=voucher, funder_id=funder, client_ref=client, decision_ref=nid("D"),
                         category=category, unit="hour", units_per_period=Decimal("20"), period="month",
                         value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                         issued_at=NOV - timedelta(days=8), **extra)


def charge(funder: str, voucher: str, provider: str, category: str, units: str, price_cents: int,
           own_share: int = 0, charge_id: str | None = None) -> ChargeAccepted:
    return ChargeAccepted(charge_id=charge_id or nid("c"), voucher_id=voucher, funder_id=funder, provider_id=provider,
                          category=category, service_date=date(2026, 11, 5), units=Decimal(units),
                          unit_price_cents=price_cents, amount_cents=int(Decimal(units) * price_cents),
                          own_share_cents=own_share, accepted_at=NOV)


def settle(c: ChargeAccepted, days: int) -> ChargeSettled:
    fee = (c.amount_cents * 5 + 50) // 100
    return ChargeSettled(charge_id=c.charge_id, settlement_id=nid("s"), voucher_id=c.voucher_id, funder_id=c.funder_id,
                         provider_id=c.provider_id, category=c.category, gross_cents=c.amount_cents, fee_cents=fee,
                         net_cents=c.amount_cents - fee, settled_at=c.accepted_at + timedelta(days=days))


def a_month() -> list[Event]:
    """Funder 091's November 2026: home care for 6 clients (5 with provider p1, one with p2), home
    nursing for 5, cleaning for 2; settlements (one late), a cancelled charge, 5 switches, a revocation."""
    ev: list[Event] = [approved("091", p, "home_care") for p in ("p1", "p2", "p3")]
    ev += [approved("091", "p1", "cleaning"), approved("091", "p4", "home_nursing")]
    ev += [ProviderSuspended(approval_id="a-091-p3-home_care", provider_id="p3", funder_id="091",
                             category="home_care", reason="insurance_lapsed", effective_from=date(2026, 11, 1),
                             suspended_at=NOV - timedelta(days=10))]
    ev += [price("091", p, "home_care", c, date(2026, 10, 1)) for p, c in (("p1", 2500), ("p2", 2700), ("p3", 3000))]
    bands = ["75-84", "75-84", "75-84", "85-89", "85-89", "90+"]
    for i in range(1, 7):
        ev.append(issued("091", f"v{i}", f"asiakas-{i}", "home_care", bands[i - 1]))
    for i in range(7, 9):
        ev.append(issued("091", f"v{i}", f"asiakas-{i}", "cleaning"))
    for i in range(9, 14):
        ev.append(issued("091", f"v{i}", f"asiakas-{i}", "home_nursing"))
    home = [charge("091", f"v{i}", "p1", "home_care", "4", 2500, own_share=500 if i == 1 else 0) for i in range(1, 6)]
    home.append(charge("091", "v6", "p2", "home_care", "2", 2700))
    ev += home
    ev += [settle(c, 3) for c in home[:5]] + [settle(home[5], 20)]
    cancelled = charge("091", "v1", "p1", "home_care", "1", 2500)
    ev += [cancelled, ChargeCancelled(charge_id=cancelled.charge_id, voucher_id="v1", funder_id="091", provider_id="p1",
                                      category="home_care", service_date=cancelled.service_date, units=Decimal("1"),
                                      amount_cents=2500, cancelled_at=NOV)]
    ev += [charge("091", f"v{i}", "p1", "cleaning", "1", 2000) for i in (7, 8)]
    ev += [charge("091", f"v{i}", "p4", "home_nursing", "1", 3100) for i in range(9, 14)]
    ev += [VoucherProviderChosen(voucher_id=f"v{i}", funder_id="091", provider_id="p1", category="home_care",
                                 chosen_at=NOV, previous_provider_id="p2") for i in range(1, 6)]
    ev += [VoucherRevoked(voucher_id="v6", funder_id="091", decision_ref="D-v6", decision_version=2,
                          category="home_care", effective_from=date(2026, 11, 25), revoked_at=NOV)]
    return ev


# ------------------------------------------------------------------ the service on the broker
class Reporting:
    def __init__(self, app, http: httpx.AsyncClient, publisher: Bus):  # noqa: ANN001
        self.app, self.http, self.publisher = app, http, publisher
        self.published = 0

    @property
    def sessions(self):  # noqa: ANN201
        return self.app.state.runtime.sessions

    async def publish(self, events: list[Event | Envelope]) -> list[Envelope]:
        envs = [e if isinstance(e, Envelope) else Envelope.wrap(e, "test") for e in events]
        for env in envs:
            await self.publisher.publish(env.model_dump_json().encode(), env.routing_key, message_id=env.id,
                                         type_=env.type)
        return envs

    async def archived(self) -> int:
        async with self.sessions() as s:
            return (await s.execute(sa.select(sa.func.count()).select_from(ReceivedEvent.__table__))).scalar_one()

    async def flow(self, events: list[Event]) -> list[Envelope]:
        """Publish the events and wait until the service has folded them all."""
        before = await self.archived()
        envs = await self.publish(events)
        await eventually(lambda: self._has(before + len(envs)), timeout=30)
        return envs

    async def _has(self, n: int) -> bool:
        return await self.archived() >= n

    async def get(self, path: str, headers: dict = CONTROLLER, status: int = 200) -> httpx.Response:  # noqa: B006
        r = await self.http.get(path, headers=headers)
        assert r.status_code == status, r.text
        return r


@asynccontextmanager
async def reporting_on_the_bus(pg, amqp_url: str, namespace: str):  # noqa: ANN001, ANN201
    settings = ReportingSettings(environment="test", database_url=await pg.create("reporting"), amqp_url=amqp_url,
                                 bus_namespace=namespace)
    app = create_app(settings)
    app.state.clock = FixedClock(NOV + timedelta(days=5))
    publisher = Bus(make_settings(service_name="payments", amqp_url=amqp_url, bus_namespace=namespace))
    async with app.router.lifespan_context(app):
        await publisher.connect()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as http:
                rep = Reporting(app, http, publisher)
                rep.database_url = settings.database_url
                yield rep
        finally:
            await publisher.close()


async def snapshot(sessions) -> dict[str, list]:  # noqa: ANN001
    """Every row of every read model, in a stable order."""
    out = {}
    async with sessions() as s:
        for model in READ_MODELS:
            table = model.__table__
            rows = (await s.execute(sa.select(table).order_by(*table.primary_key.columns))).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def row(report: dict, category: str) -> dict:
    return next(r for r in report["categories"] if r["category"] == category)


# ------------------------------------------------------------------ the monthly report
async def test_monthly_report_from_events_on_the_broker(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        envs = await rep.flow(a_month())
        for i, rating in zip(range(1, 6), (5, 5, 4, 4, 2)):
            r = await rep.http.post("/feedback", json={"rating": rating}, headers=bearer("client", voucher_id=f"v{i}"))
            assert r.status_code == 201, r.text
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        assert report["schema"] == "seteli.monthly-report.v1" and report["min_clients"] == 5
        home = row(report, "home_care")
        assert home["suppressed"] == ["vouchers_revoked"]  # one voucher revoked: one client
        assert {k: home[k] for k in ("vouchers_issued", "vouchers_active", "vouchers_revoked", "clients_served",
                                     "charges", "charged_cents", "own_share_cents", "volume_cents",
                                     "settled_charges", "settled_gross_cents", "feedback_responses",
                                     "providers_approved", "providers_suspended", "providers_with_prices",
                                     "average_list_price_cents", "average_charged_price_cents")} == {
            "vouchers_issued": 6, "vouchers_active": 6, "vouchers_revoked": None, "clients_served": 6,
            "charges": 6,  # the cancelled charge does not count
            "charged_cents": 5 * 10000 + 5400, "own_share_cents": 500, "volume_cents": 55900,
            "settled_charges": 6, "settled_gross_cents": 55400, "feedback_responses": 5,
            "providers_approved": 2, "providers_suspended": 1, "providers_with_prices": 3,
            "average_list_price_cents": 2733, "average_charged_price_cents": 2518}
        assert Decimal(home["units_used"]) == 22 and Decimal(home["units_granted"]) == 120
        assert Decimal(home["utilisation"]) == Decimal("0.1833")
        assert Decimal(home["settled_within_14_days_share"]) == Decimal("0.8333")  # 5 of 6 within 14 days
        assert Decimal(home["worst_settlement_delay_days"]) == 20
        assert Decimal(home["satisfied_share"]) == Decimal("0.8")  # 4 of 5 rated 4 or 5
        assert Decimal(home["response_rate"]) == Decimal("0.8333")  # 5 of the 6 clients answered
        cleaning = row(report, "cleaning")  # two clients: every figure about them is suppressed
        assert cleaning["clients_served"] is None and cleaning["charged_cents"] is None
        assert cleaning["vouchers_issued"] is None and "charged_cents" in cleaning["suppressed"]
        assert cleaning["providers_approved"] == 1  # a figure about providers, not clients
        nursing = row(report, "home_nursing")  # five clients, but the next smallest row: complementary
        assert nursing["charged_cents"] is None and nursing["clients_served"] is None
        total = report["total"]
        assert total["charged_cents"] == 55400 + 2 * 2000 + 5 * 3100 and total["clients_served"] == 13
        assert total["vouchers_revoked"] is None  # the total of one revocation describes one client
        # the total minus the shown rows never gives a suppressed cell
        for figure in ("charged_cents", "clients_served", "vouchers_issued", "charges"):
            hidden = [r for r in report["categories"] if r[figure] is None]
            assert len(hidden) != 1, figure
        # market shares: p1 has 5 clients, p2 one: p2 suppressed, and so p1 (complementary)
        shares = {(p["category"], p["provider_id"]): p for p in report["providers"]}
        assert shares[("home_care", "p2")]["charged_cents"] is None
        assert shares[("home_care", "p1")]["market_share"] is None
        assert shares[("home_care", "p1")]["suppressed"] and shares[("home_care", "p2")]["suppressed"]
        # switches: 5 clients switched (shown); the age bands (3 and 2 clients) are suppressed
        if "age_band" in VoucherIssued.model_fields:
            assert report["switches"]["switches"] == 5
            bands = {b["age_band"]: b for b in report["switches"]["age_bands"]}
            assert set(bands) == {"75-84", "85-89"} and all(b["clients"] is None for b in bands.values())

        # the same as CSV
        r = await rep.get("/funders/091/reports/monthly.csv?period=2026-11")
        assert r.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(r.text)))
        by_cat = {x["category"]: x for x in lines}
        assert set(by_cat) == {"home_care", "cleaning", "home_nursing", "total"}
        assert by_cat["home_care"]["charged_cents"] == "55400" and by_cat["cleaning"]["charged_cents"] == ".."
        assert "charged_cents" in by_cat["cleaning"]["suppressed"].split()

        # another funder's staff see nothing of 091's; the operator's analyst sees the statistics
        await rep.get("/funders/091/reports/monthly?period=2026-11", headers=FINANCE_049, status=404)
        stats = (await rep.get("/statistics/monthly?period=2026-11", headers=OPERATOR)).json()
        assert row(stats, "home_care")["clients_served"] == 6 and row(stats, "cleaning")["charged_cents"] is None
        await rep.get("/statistics/monthly?period=2026-11", status=403)
        bad = await rep.get("/funders/091/reports/monthly?period=2026-13", status=422)
        assert bad.json()["error"]["reason"] == "invalid_period"

        # redelivered events change nothing; a rebuild from the archive gives the same read models
        live = await snapshot(rep.sessions)
        await rep.publish(envs[::7])
        await rep.flow([approved("049", "p9", "home_care")])  # something new behind the redeliveries
        after = await snapshot(rep.sessions)
        assert after["reporting_funder_figures"] != live["reporting_funder_figures"]
        assert {k: v for k, v in after.items() if k not in ("reporting_funder_figures", "reporting_funder_member",
                                                            "reporting_approval_change")} == \
            {k: v for k, v in live.items() if k not in ("reporting_funder_figures", "reporting_funder_member",
                                                        "reporting_approval_change")}
        assert (await rep.get("/funders/091/reports/monthly?period=2026-11")).json() == report
        from seteli_shared.logging import bind_correlation

        job_id = str(uuid.uuid4())
        bind_correlation(job_id)  # as `seteli-reporting rebuild` names its job
        done = await usecases.rebuild(rep.sessions, chunk=7)
        assert done["events_folded"] == len(envs) + 1
        assert await snapshot(rep.sessions) == after
        # the rebuild was a long job: GET /jobs/{id} tells what it did
        job = (await rep.get(f"/jobs/{job_id}", headers=OPERATOR)).json()
        assert (job["kind"], job["outcome"], job["done"]) == ("reporting.rebuild", "ok", len(envs) + 1)
        assert job["total"] >= len(envs) + 1
        assert (await rep.get("/funders/091/reports/monthly?period=2026-11")).json() == report


async def test_folding_in_another_order_gives_the_same_read_models(pg, amqp_url, namespace):  # noqa: ANN001
    """Settlements before their charges, cancellations first, amendments before issues: the broker
    may deliver any of them late. The read models do not depend on the order."""
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        events = a_month()
        await rep.flow(list(reversed(events)))
        reversed_order = await snapshot(rep.sessions)
        await usecases.rebuild(rep.sessions, chunk=3)
        assert await snapshot(rep.sessions) == reversed_order
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        home = row(report, "home_care")
        assert (home["charges"], home["charged_cents"], home["settled_charges"]) == (6, 55400, 6)
        assert Decimal(home["worst_settlement_delay_days"]) == 20
        # the switches came before their vouchers' issues: their clients and age bands were filled in after
        assert report["switches"]["switches"] == 5 and report["switches"]["clients"] == 5
        assert {b["age_band"] for b in report["switches"]["age_bands"]} == {"75-84", "85-89"}


async def test_switches_folded_before_their_vouchers_issue_get_its_age_band(pg, amqp_url, namespace):  # noqa: ANN001
    """The switches arrive (and are folded) first, the vouchers' issues later: the report's age bands are
    the same as when the issues came first."""
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        events = a_month()
        switches = [e for e in events if isinstance(e, VoucherProviderChosen)]
        await rep.flow(switches)
        early = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()["switches"]
        assert [b["age_band"] for b in early["age_bands"]] == ["unknown"]
        await rep.flow([e for e in events if not isinstance(e, VoucherProviderChosen)])
        later = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()["switches"]
        assert (later["switches"], later["clients"]) == (5, 5)
        assert {b["age_band"] for b in later["age_bands"]} == {"75-84", "85-89"}
        live = await snapshot(rep.sessions)
        await usecases.rebuild(rep.sessions, chunk=4)
        assert await snapshot(rep.sessions) == live


def correction(c: ChargeAccepted, units_after: str, amount_after: int) -> ChargeCorrected:
    removed = c.amount_cents - amount_after
    return ChargeCorrected(correction_id=nid("k"), charge_id=c.charge_id, voucher_id=c.voucher_id,
                           funder_id=c.funder_id, provider_id=c.provider_id, category=c.category,
                           service_date=c.service_date, kind="reversal" if amount_after == 0 else "partial",
                           reason="wrong_units", units=c.units - Decimal(units_after), amount_cents=removed,
                           own_share_cents=0, fee_cents=removed // 20, net_cents=removed - removed // 20,
                           units_after=Decimal(units_after), amount_cents_after=amount_after,
                           own_share_cents_after=0, settlement_id="s-x", corrected_at=NOV + timedelta(days=4))


async def test_corrected_charges_count_with_their_figures_after_correction(pg, amqp_url, namespace):  # noqa: ANN001
    """Corrections of settled charges, in whatever order they and their charge arrive: the lowest
    figures any correction names count; a full reversal leaves nothing charged."""
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        charges = [charge("091", f"v{i}", "p1", "home_care", "4", 2500) for i in range(5)]
        fixes = [correction(charges[0], "3", 7500), correction(charges[0], "2", 5000), correction(charges[1], "0", 0)]
        await rep.flow([fixes[1], fixes[2]] + [issued("091", f"v{i}", f"k-{i}", "home_care") for i in range(5)]
                       + charges + [settle(c, 2) for c in charges] + [fixes[0]])
        home = row((await rep.get("/funders/091/reports/monthly?period=2026-11")).json(), "home_care")
        assert (home["charged_cents"], Decimal(home["units_used"])) == (5000 + 0 + 3 * 10000, 14)
        assert home["settled_gross_cents"] == 5 * 10000  # what was paid out stays as it was
        live = await snapshot(rep.sessions)
        await usecases.rebuild(rep.sessions)
        assert await snapshot(rep.sessions) == live


async def _schema_of_read_models(sessions) -> list:  # noqa: ANN001
    """The read models' constraints and indexes by name and definition, and the schemas there are."""
    names = [m.__tablename__ for m in READ_MODELS]
    async with sessions() as s:
        indexes = (await s.execute(sa.text("SELECT tablename, indexname, indexdef FROM pg_indexes "
                                           "WHERE tablename = ANY(:n) ORDER BY 1, 2"), {"n": names})).all()
        keys = (await s.execute(sa.text("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                                        "FROM pg_constraint WHERE conrelid::regclass::text = ANY(:n) ORDER BY 1, 2"),
                                {"n": names})).all()
        schemas = (await s.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'reporting%'"))).all()
    return [list(indexes), list(keys), list(schemas)]


async def _hold_until_the_swap_gives_up(sessions, table: str) -> None:  # noqa: ANN001
    """A report's read that holds ``table`` until the rebuild's swap has waited for it and given up once."""
    async with sessions() as reader, reader.begin():
        await reader.execute(sa.text(f"SELECT count(*) FROM {table}"))  # its lock lasts until commit

        async def swap_waits() -> bool:
            async with sessions() as s:
                return (await s.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted AND "
                                                "relation = CAST(:t AS regclass)"), {"t": table})).scalar_one() > 0
        await eventually(swap_waits, timeout=20)
        await asyncio.sleep(usecases.REBUILD_SWAP_LOCK_SECONDS * 3)


async def test_a_rebuild_folds_the_events_that_arrive_while_it_runs(pg, amqp_url, namespace, monkeypatch):  # noqa: ANN001
    """The rebuild commits as it goes, beside the live read models: the consumer keeps folding and the
    reports keep answering. Events that arrive meanwhile (one of them dated before everything folded so
    far) are in the rebuilt read models, which replace the live ones with the migrations' own index and
    constraint names. The swap waits a bounded time for a report reading a table, and tries again. A
    second rebuild is refused while one runs; a rebuild that fails changes nothing."""
    monkeypatch.setattr(usecases, "REBUILD_SWAP_LOCK_SECONDS", 0.2)
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        events = a_month()
        await rep.flow(events[: len(events) // 2])
        shape = await _schema_of_read_models(rep.sessions)
        report_before = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()

        async def fail(folded: int) -> None:
            # while it runs, the reports still answer, from the live read models
            assert (await rep.get("/funders/091/reports/monthly?period=2026-11")).json() == report_before
            raise RuntimeError("the rebuild stops here")

        live = await snapshot(rep.sessions)
        try:
            await usecases.rebuild(rep.sessions, chunk=3, on_batch=fail)
            raise AssertionError("the rebuild should have stopped")
        except RuntimeError as stopped:
            assert str(stopped) == "the rebuild stops here"
        assert await snapshot(rep.sessions) == live and await _schema_of_read_models(rep.sessions) == shape

        calls, expected, reading = [], {}, []

        async def meanwhile(folded: int) -> None:
            calls.append(folded)
            if len(calls) == 1:
                try:
                    await usecases.rebuild(rep.sessions)
                    raise AssertionError("a second rebuild should be refused")
                except Conflict as busy:
                    assert busy.reason == "rebuild_running"
                late = Envelope.wrap(approved("049", "p8", "home_care"), "test")
                late = late.model_copy(update={"time": NOV - timedelta(days=400)})  # before every folded event
                await rep.flow([*events[len(events) // 2:], late])  # the consumer folds them into the live tables
                expected.update(await snapshot(rep.sessions))
                reading.append(asyncio.create_task(_hold_until_the_swap_gives_up(rep.sessions,
                                                                                 READ_MODELS[0].__tablename__)))

        done = await usecases.rebuild(rep.sessions, chunk=3, on_batch=meanwhile)
        assert len(calls) > 1 and done["events_folded"] == len(events) + 1
        await reading[0]
        assert done["swap_attempts"] > 1  # the first swap gave up waiting for the report's read
        rebuilt = await snapshot(rep.sessions)
        # the live read models had folded everything too: the rebuilt ones are the same rows
        assert rebuilt["reporting_funder_figures"] and rebuilt == expected
        assert await _schema_of_read_models(rep.sessions) == shape
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        assert row(report, "home_care")["charges"] == 6
        await rep.flow([approved("049", "p7", "home_care")])  # the consumer folds into the swapped-in tables
        figures = (await rep.get("/funders/049/figures", headers=OPERATOR)).json()
        assert figures["providers_approved"] >= 2


# ------------------------------------------------------------------ price development (the seed's table)
def seed_prices(funder: str = "091") -> list[Event]:
    """34 providers of home help: prices averaging 27.47 EUR/h from October, 27.13 EUR/h from November."""
    october = [2600 + 7 * i for i in range(34)]
    october[-1] += 34 * 2747 - sum(october)
    november = [p - 34 for p in october]
    november[-1] += 34 * 2713 - sum(november)
    assert sum(october) == 34 * 2747 and sum(november) == 34 * 2713
    ev: list[Event] = []
    for i in range(34):
        ev.append(price(funder, f"hp{i}", "home_care", october[i], date(2026, 10, 1)))
        ev.append(price(funder, f"hp{i}", "home_care", november[i], date(2026, 11, 1)))
    ev.append(price(funder, "hp0", "cleaning", 2633, date(2026, 10, 1)))
    return ev


async def test_the_seeds_price_development_is_reproduced(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow(seed_prices())
        # charges at the November prices: 6 clients, 2 h each, weighted by units
        await rep.flow([issued("091", f"w{i}", f"k-{i}", "home_care") for i in range(6)]
                       + [charge("091", f"w{i}", f"hp{i}", "home_care", "2", 2700 + 10 * i) for i in range(6)])
        items = (await rep.get("/funders/091/reports/prices?category=home_care")).json()["items"]
        by_month = {r["period"]: r for r in items}
        assert set(by_month) == {"2026-10", "2026-11"}
        assert (by_month["2026-10"]["average_price_eur"], by_month["2026-10"]["providers"]) == ("27.47", 34)
        assert (by_month["2026-11"]["average_price_eur"], by_month["2026-11"]["providers"]) == ("27.13", 34)
        assert by_month["2026-11"]["unit_weighted_price_cents"] == 2725 and by_month["2026-11"]["suppressed"] == []
        assert by_month["2026-10"]["unit_weighted_price_cents"] is None  # nothing charged in October
        every = (await rep.get("/funders/091/reports/prices")).json()["items"]
        assert {(r["period"], r["category"]) for r in every} >= {("2026-10", "cleaning"), ("2026-11", "home_care")}
        r = await rep.get("/funders/091/reports/prices.csv?category=home_care")
        assert r.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(r.text)))
        assert [(x["period"], x["average_price_eur"], x["providers"]) for x in lines] == [
            ("2026-10", "27.47", "34"), ("2026-11", "27.13", "34")]
        await rep.get("/funders/091/reports/prices?category=Home-Care", status=422)
        await rep.get("/funders/091/reports/prices", headers=FINANCE_049, status=404)


# ------------------------------------------------------------------ charts
async def test_charts_show_the_data_as_svg_and_png(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow(seed_prices() + [e for e in a_month() if not isinstance(e, PriceListPublished)])
        svg = await rep.get("/funders/091/charts/price-development.svg?category=home_care")
        assert svg.headers["content-type"] == "image/svg+xml"
        root = ET.fromstring(svg.content)
        assert root.tag.endswith("svg")
        text = svg.text
        # in Finnish by default: months as 10/2026, decimal commas, the category's name, not its code
        assert "10/2026" in text and "11/2026" in text and "27,47" in text and "27,13" in text
        assert "Hintakehitys: Kotihoito" in text and "home_care" not in text
        swedish = (await rep.get("/funders/091/charts/price-development.svg?category=home_care&lang=sv")).text
        assert "Prisutveckling: Hemvård" in swedish and "34 producenter" in swedish
        assert "Price development: Home care" in (await rep.get(
            "/funders/091/charts/price-development.svg?category=home_care&lang=en")).text
        await rep.get("/funders/091/charts/price-development.svg?lang=de", status=422)
        png = await rep.get("/funders/091/charts/price-development.png?category=home_care")
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        volume = await rep.get("/funders/091/charts/monthly-volume.svg")
        assert volume.headers["content-type"] == "image/svg+xml" and "11/2026" in volume.text
        assert "Veloitukset kuukausittain" in volume.text and "asiakkaiden omavastuut" in volume.text
        ET.fromstring(volume.content)
        png = await rep.get("/funders/091/charts/monthly-volume.png")
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and len(png.content) > 5000
        if os.environ.get("REPORTING_CHARTS_OUT"):  # keep this test's charts (services/reporting/docs/)
            out = Path(os.environ["REPORTING_CHARTS_OUT"])
            out.mkdir(parents=True, exist_ok=True)
            for name in ("price-development.svg", "price-development.png", "monthly-volume.svg"):
                query = "?category=home_care" if name.startswith("price") else ""
                (out / name).write_bytes((await rep.get(f"/funders/091/charts/{name}{query}")).content)
        await rep.get("/funders/091/charts/monthly-volume.png", headers=FINANCE_049, status=404)


# ------------------------------------------------------------------ clients' feedback
async def test_feedback_one_per_voucher_and_month_texts_for_the_funder_only(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow([issued("091", "v1", "asiakas-1", "home_care"), issued("049", "v2", "asiakas-2", "home_care")])
        client = bearer("client", voucher_id="v1")
        r = await rep.http.post("/feedback", json={"rating": 2, "text": "Hoitaja myöhästyi"}, headers=client)
        assert r.status_code == 201 and r.json()["rating"] == 2 and r.json()["voucher_id"] == "v1", r.text
        # once a month: a second is refused saying so, and the first stays as the funder may have read it
        r2 = await rep.http.post("/feedback", json={"rating": 5, "text": "  Nyt toimii hyvin  "}, headers=client)
        assert (r2.status_code, r2.json()["error"]["reason"]) == (409, "feedback_already_given"), r2.text
        assert r2.json()["error"]["details"] | {"given_on": None} == {"period": "2026-11", "given_on": None,
                                                                     "next_from": "2026-12-01"}
        other = await rep.http.post("/feedback", json={"rating": 4}, headers=bearer("client", voucher_id="v2"))
        assert other.status_code == 201
        for bad in ({"rating": 0}, {"rating": 6}, {"rating": "good"}, {}, {"rating": 3, "text": "x" * 2001},
                    {"rating": 3, "extra": 1}):
            r = await rep.http.post("/feedback", json=bad, headers=client)
            assert r.status_code == 422 and "error" in r.json(), (bad, r.text)
        hetu = await rep.http.post("/feedback", json={"rating": 3, "text": "olen 131052-308T"}, headers=client)
        assert (hetu.status_code, hetu.json()["error"]["reason"]) == (422, "personal_identity_code")
        assert "131052" not in hetu.text
        assert (await rep.http.post("/feedback", json={"rating": 3}, headers=CONTROLLER)).status_code == 403
        assert (await rep.http.post("/feedback", json={"rating": 3})).status_code == 401
        mine = (await rep.get("/funders/091/feedback?period=2026-11")).json()["items"]
        assert [(f["rating"], f["text"], f["category"]) for f in mine] == [(2, "Hoitaja myöhästyi", "home_care")]
        assert "voucher_id" not in mine[0]
        theirs = (await rep.get("/funders/049/feedback?period=2026-11",
                                headers=bearer("funder_reporting", funder_id="049"))).json()["items"]
        assert [f["rating"] for f in theirs] == [4] and theirs[0]["text"] is None
        await rep.get("/funders/091/feedback?period=2026-11", headers=FINANCE_049, status=404)
        await rep.get("/funders/091/feedback?period=2026-11", headers=OPERATOR, status=403)  # never operator-wide
        async with rep.sessions() as s:
            stored = (await s.execute(sa.text("SELECT count(*) FROM reporting_feedback"))).scalar_one()
        assert stored == 2



async def test_an_odd_funder_id_in_a_csv_download_is_no_server_error(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        for path in ("/funders/B%C3%82lA%F4%8B%8D%98%5D/reports/monthly.csv?period=2026-11",
                     "/funders/B%C3%82lA%F4%8B%8D%98%5D/reports/prices.csv"):
            r = await rep.get(path, headers=OPERATOR)
            assert r.headers["content-disposition"].isascii() and r.text.startswith("funder_id,")


async def test_market_shares_and_total_clients_follow_later_cancellations(pg, amqp_url, namespace):  # noqa: ANN001
    """Market shares and the total row's distinct clients are kept by the fold: a client with charges in
    two categories counts once in the total; a provider whose only charges are cancelled in a later
    delivery disappears from the shares; the rebuilt read models are the same."""
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        home = [charge("091", f"v{i}", "p1", "home_care", "2", 2500) for i in range(6)]
        cleaning = [charge("091", f"w{i}", "p2", "cleaning", "1", 2000) for i in range(6)]
        other = charge("091", "v0", "p3", "home_care", "1", 3000)
        await rep.flow([issued("091", f"v{i}", f"k-{i}", "home_care") for i in range(6)]
                       + [issued("091", f"w{i}", f"k-{i}", "cleaning") for i in range(6)] + home + cleaning + [other])
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        assert report["total"]["clients_served"] == 6  # the same six clients in both categories
        shares = {(p["category"], p["provider_id"]): p for p in report["providers"]}
        assert set(shares) == {("home_care", "p1"), ("home_care", "p3"), ("cleaning", "p2")}
        assert shares[("cleaning", "p2")]["clients"] == 6 and shares[("cleaning", "p2")]["charged_cents"] == 12000
        await rep.flow([ChargeCancelled(charge_id=c.charge_id, voucher_id=c.voucher_id, funder_id="091",
                                        provider_id=c.provider_id, category=c.category, service_date=c.service_date,
                                        units=c.units, amount_cents=c.amount_cents, cancelled_at=NOV)
                        for c in [other] + home[:3]])
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        shares = {(p["category"], p["provider_id"]): p for p in report["providers"]}
        assert set(shares) == {("home_care", "p1"), ("cleaning", "p2")}
        assert report["total"]["clients_served"] == 6  # k-0..k-2 still have their cleaning
        assert row(report, "home_care")["clients_served"] is None  # three clients left: suppressed
        live = await snapshot(rep.sessions)
        await usecases.rebuild(rep.sessions, chunk=5)
        assert await snapshot(rep.sessions) == live


# ------------------------------------------------------------------ suppression over linked tables (issue 18)
def attack(report: dict) -> dict[tuple, tuple[float, float | None]]:
    """What a reader works out from the published report alone, as the issue's statistician did: every
    null cell of the category rows, the total and the market shares as a variable, the total row the sum
    of the categories and each category's clients, euros and units the sums of its providers' (nobody
    counted twice), every figure at least 0; each variable's smallest and largest value by ``linprog``.
    Written apart from the service's own audit on purpose."""
    from scipy.optimize import linprog

    pairs = {"clients_served": "clients", "charged_cents": "charged_cents", "units_used": "units"}
    figures = ("clients_served", "charged_cents", "units_used", "vouchers_issued", "charges", "settled_gross_cents")
    values: dict[tuple, float | None] = {}
    for r in report["categories"]:
        for f in figures:
            values[("category", r["category"], f)] = None if r[f] is None else float(r[f])
    for f in figures:
        values[("total", f)] = None if report["total"][f] is None else float(report["total"][f])
    for p in report["providers"]:
        for f in ("clients", "charged_cents", "units"):
            values[("provider", p["category"], p["provider_id"], f)] = None if p[f] is None else float(p[f])
    sums = [(("total", f), [("category", r["category"], f) for r in report["categories"]]) for f in figures]
    for r in report["categories"]:
        for f, pf in pairs.items():
            mine = [k for k in values if k[0] == "provider" and k[1] == r["category"] and k[3] == pf]
            if mine:
                sums.append((("category", r["category"], f), mine))
    unknown = sorted(k for k, v in values.items() if v is None)
    col = {k: i for i, k in enumerate(unknown)}
    a_eq, b_eq = [], []
    for total, parts in sums:
        row, rhs = [0.0] * len(unknown), 0.0
        for key, coef in [(total, 1.0)] + [(p, -1.0) for p in parts]:
            if key in col:
                row[col[key]] += coef
            else:
                rhs -= coef * values[key]
        if any(row):
            a_eq.append(row)
            b_eq.append(rhs)
    out = {}
    for k in unknown:
        found = []
        for sign in (1, -1):
            c = [0.0] * len(unknown)
            c[col[k]] = sign
            res = linprog(c, A_eq=a_eq or None, b_eq=b_eq or None, bounds=(0, None), method="highs")
            found.append(None if res.status == 3 else sign * res.fun)
        out[k] = (found[0], found[1])
    return out


def issue_events(funder: str = "091") -> list[Event]:
    """The issue's month: 3 clients in cleaning (18,000 cents, 6 units) and 240 in home care (47,536,666
    cents, 17,304.50 units) with four providers of 100, 80, 40 and 20 clients."""
    ev: list[Event] = []
    providers = ["hoiva-a"] * 100 + ["hoiva-b"] * 80 + ["hoiva-c"] * 40 + ["hoiva-d"] * 20
    for i, provider in enumerate(providers):
        last = i == len(providers) - 1
        units, amount = (Decimal("96.50"), 198175) if last else (Decimal("72"), 198069)
        ev.append(issued(funder, f"h{funder}-{i}", f"k-{funder}-h{i}", "home_care"))
        ev.append(ChargeAccepted(charge_id=nid("c"), voucher_id=f"h{funder}-{i}", funder_id=funder, provider_id=provider,
                                 category="home_care", service_date=date(2026, 11, 5), units=units,
                                 unit_price_cents=2748, amount_cents=amount, own_share_cents=0, accepted_at=NOV))
    for i in range(3):
        ev.append(issued(funder, f"s{funder}-{i}", f"k-{funder}-s{i}", "cleaning"))
        ev.append(charge(funder, f"s{funder}-{i}", "siivous-oy", "cleaning", "2", 3000))
    return ev


def hidden_cells(report: dict) -> set[tuple]:
    return {(r["category"], f) for r in [*report["categories"], report["total"]] for f in r["suppressed"]}


async def test_the_issues_month_cannot_be_differenced_in_any_report_or_form(pg, amqp_url, namespace):  # noqa: ANN001
    """The issue's attack on the published report fails: total minus what the report shows (category
    rows and market shares) leaves cleaning's clients anywhere from 0 to 5 or more, its euros and units
    half their value either way. The CSV and the price development hide the same cells, the audit passes
    and shows its intervals to the funder's staff and the operator only, and the operator's statistics do
    not give back 091's cleaning beside 049's report."""
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        others = [issued("049", f"o{i}", f"k-049-{i}", "cleaning") for i in range(30)]
        others += [charge("049", f"o{i}", "siivous-ab", "cleaning", "2", 3000) for i in range(30)]
        await rep.flow(issue_events() + others)
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        home, cleaning = row(report, "home_care"), row(report, "cleaning")
        assert report["total"]["clients_served"] == 243 and report["total"]["charged_cents"] == 47536666 + 18000
        assert cleaning["clients_served"] is None and cleaning["charged_cents"] is None
        found = attack(report)
        low, high = found[("category", "cleaning", "clients_served")]
        assert low == 0 and (high is None or high >= 5), (low, high)  # today's main: exactly 3
        low, high = found[("category", "cleaning", "charged_cents")]
        assert low <= 9000 and (high is None or high >= 27000), (low, high)  # today's main: exactly 18,000
        low, high = found[("category", "cleaning", "units_used")]
        assert low <= 3 and (high is None or high >= 9), (low, high)  # today's main: exactly 6
        shares = {p["provider_id"]: p for p in report["providers"] if p["category"] == "home_care"}
        assert any(p["clients"] is None for p in shares.values())  # the market shares no longer add up to 240
        assert sum(p["clients"] or 0 for p in shares.values()) < 240 or home["clients_served"] is not None

        # the CSV hides the same cells
        lines = list(csv.DictReader(io.StringIO((await rep.get("/funders/091/reports/monthly.csv?period=2026-11")).text)))
        in_csv = {(x["category"], f) for x in lines for f in x if x[f] == ".."}
        assert in_csv == hidden_cells(report) - {(r, f) for r, f in hidden_cells(report) if f not in lines[0]}
        assert {(x["category"], f) for x in lines for f in x["suppressed"].split()} == hidden_cells(report)
        # the price development's November is the same cells
        prices = {r["category"]: r for r in (await rep.get("/funders/091/reports/prices")).json()["items"]
                  if r["period"] == "2026-11"}
        for category in ("cleaning", "home_care"):
            r = row(report, category)
            assert (prices[category]["clients_charged"] is None) == (r["clients_served"] is None)
            assert (prices[category]["charged_units"] is None) == (r["units_used"] is None)
            assert (prices[category]["unit_weighted_price_cents"] is None) == (r["average_charged_price_cents"] is None)

        # the audit, for the funder's statistician
        audit = (await rep.get("/funders/091/reports/monthly/audit?period=2026-11")).json()
        assert audit["passed"] and audit["cells"] and all(c["verdict"] == "protected" for c in audit["cells"])
        assert {(c["row"].get("category", "total"), c["figure"]) for c in audit["cells"]
                if c["table"] in ("category", "total")} == hidden_cells(report) & {
            (c, f) for c, f in hidden_cells(report) if f in ("vouchers_issued", "vouchers_active", "vouchers_expired",
                                                            "vouchers_revoked", "clients_served", "units_granted",
                                                            "units_used", "charges", "charged_cents", "own_share_cents",
                                                            "volume_cents", "settled_charges", "settled_gross_cents",
                                                            "fee_cents", "net_cents", "feedback_responses")}
        clients = next(c for c in audit["cells"] if c["row"] == {"category": "cleaning"} and c["figure"] == "clients_served")
        assert Decimal(clients["lower"]) == 0 and (clients["upper"] is None or Decimal(clients["upper"]) >= 5)
        assert audit["narrowest"] is not None
        print("the issue's month: narrowest", audit["narrowest"], "cleaning", [
            (c["figure"], c["lower"], c["upper"]) for c in audit["cells"] if c["row"] == {"category": "cleaning"}
            and c["figure"] in ("clients_served", "charged_cents", "units_used")])
        await rep.get("/funders/091/reports/monthly/audit?period=2026-11", headers=FINANCE_049, status=404)
        await rep.get("/funders/091/reports/monthly/audit?period=2026-11", headers=bearer("client", voucher_id="s091-0"),
                      status=403)
        await rep.get("/funders/091/reports/monthly/audit?period=2026-11", headers=OPERATOR)
        bad = await rep.get("/funders/091/reports/monthly/audit?period=2026-13", status=422)
        assert bad.json()["error"]["reason"] == "invalid_period"

        # the operator's statistics: cleaning's 33 would give back 091's 3 beside 049's report (30)
        theirs = (await rep.get("/funders/049/reports/monthly?period=2026-11", headers=OPERATOR)).json()
        assert row(theirs, "cleaning")["clients_served"] == 30
        stats = (await rep.get("/statistics/monthly?period=2026-11", headers=OPERATOR)).json()
        assert row(stats, "cleaning")["clients_served"] is None and row(stats, "cleaning")["charged_cents"] is None
        op_audit = (await rep.get("/statistics/monthly/audit?period=2026-11", headers=OPERATOR)).json()
        assert op_audit["passed"] and {c["funder_id"] for c in op_audit["cells"]} >= {None, "091"}
        await rep.get("/statistics/monthly/audit?period=2026-11", status=403)

        # the same audit from the command line
        done = await asyncio.to_thread(audit_command, rep.database_url, "--funder", "091", "--period", "2026-11")
        assert done.returncode == 0, done.stderr
        assert "siivous-oy" in done.stdout and done.stdout.strip().splitlines()[-1].startswith(
            f"passed: {len(audit['cells'])} suppressed cells; narrowest")
        done = await asyncio.to_thread(audit_command, rep.database_url, "--operator", "--period", "2026-11", "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["passed"], done.stderr


def audit_command(url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=url, ENVIRONMENT="test", LOG_LEVEL="WARNING")
    return subprocess.run([str(Path(sys.executable).parent / "seteli-reporting"), "audit", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_a_generated_month_hides_the_same_cells_in_json_and_csv(pg, amqp_url, namespace):  # noqa: ANN001
    """A month of 4 categories and 10 providers each (a fixed seed; about one provider in four with 1-4
    clients): no null cell of the JSON can be worked out to lie within 1-4 from the rest, the CSV marks the
    same cells, and the audit passes."""
    import random

    rng = random.Random(1818)
    ev: list[Event] = []
    for c, category in enumerate(("home_care", "cleaning", "meal_service", "home_nursing")):
        for p in range(10):
            clients = rng.randint(1, 4) if rng.random() < 0.25 else rng.randint(5, 14)
            for k in range(clients):
                voucher = f"g{c}-{p}-{k}"
                ev.append(issued("091", voucher, f"gk-{voucher}", category))
                ev.append(charge("091", voucher, f"gp-{c}-{p}", category, str(rng.randint(1, 9)), 2500 + 10 * p))
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow(ev)
        report = (await rep.get("/funders/091/reports/monthly?period=2026-11")).json()
        for key, (low, high) in attack(report).items():
            if key[-1] in ("clients_served", "clients", "vouchers_issued"):
                assert not (low >= 1 and high is not None and high <= 4), (key, low, high)
        lines = list(csv.DictReader(io.StringIO((await rep.get("/funders/091/reports/monthly.csv?period=2026-11")).text)))
        assert {(x["category"], f) for x in lines for f in x if x[f] == ".."} == {
            (c, f) for c, f in hidden_cells(report) if f in lines[0]}
        assert any(p["suppressed"] for p in report["providers"])
        audit = (await rep.get("/funders/091/reports/monthly/audit?period=2026-11")).json()
        assert audit["passed"], [c for c in audit["cells"] if c["verdict"] != "protected"]


def _svg_texts(svg: bytes, group: str) -> list[str]:
    """The texts drawn in the SVG's groups whose id starts with ``group`` (e.g. ``ytick``)."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    return ["".join(t.itertext()).strip() for g in root.iter(f"{ns}g") if g.get("id", "").startswith(group)
            for t in g.iter(f"{ns}text")]


async def test_charts_render_without_inline_styles_from_zero_and_count_each_provider_once(pg, amqp_url, namespace):  # noqa: ANN001
    """An SVG opened on its own under a CSP without inline styles (the portal's) renders only if its look
    is in presentation attributes; the y-axes start from zero; the all-categories price chart counts the
    providers with a price in any category, once each (it said the last category's count)."""
    three_more = [price("091", f"wa{i}", "work_activity", 9000 + i, date(2026, 10, 1)) for i in range(3)]
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow(seed_prices() + three_more + [e for e in a_month() if not isinstance(e, PriceListPublished)])
        for path in ("price-development.svg?category=home_care", "price-development.svg", "monthly-volume.svg"):
            svg = (await rep.get(f"/funders/091/charts/{path}")).content
            assert b" style=" not in svg and b"<style" not in svg, path
            assert b'fill="#' in svg and b"font-size=" in svg, path
            ticks = _svg_texts(svg, "ytick")
            assert ticks[0] in ("0", "0 \u20ac", "0\u00a0\u20ac"), (path, ticks)  # from zero, not from 27.10
        every = (await rep.get("/funders/091/charts/price-development.svg")).text
        # hp0..hp33 (home care; hp0 also cleaning) and wa0..wa2: 37 providers in October, not work activity's 3
        assert "10/2026 37" in every and "11/2026 37" in every, every[every.find("kuukausi"):][:300]
        assert "Kotihoito" in every and "Vammaisten henkilöiden työtoiminta" in every and "kaikki palvelut" in every


async def test_report_csvs_in_the_spreadsheet_form_finns_open_and_plain_for_machines(pg, amqp_url, namespace):  # noqa: ANN001
    async with reporting_on_the_bus(pg, amqp_url, namespace) as rep:
        await rep.flow(seed_prices() + [e for e in a_month() if not isinstance(e, PriceListPublished)])
        plain = await rep.get("/funders/091/reports/monthly.csv?period=2026-11")
        assert not plain.content.startswith(b"\xef\xbb\xbf") and plain.text.split("\r\n")[0].startswith(
            "funder_id,period,category,")
        sheet = await rep.get("/funders/091/reports/monthly.csv?period=2026-11&format=spreadsheet")
        assert sheet.headers["content-type"] == "text/csv; charset=utf-8"
        assert sheet.content.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte-order mark: Excel reads the umlauts"
        lines = sheet.content.decode("utf-8-sig").split("\r\n")
        heading = lines[0].split(";")
        assert heading[:4] == ["Järjestäjä", "Kuukausi", "Palvelu", "Myönnetyt setelit"], heading
        rows = {r[2]: dict(zip(heading, r)) for r in csv.reader(lines[1:-1], delimiter=";")}
        by_plain = {r["category"]: r for r in csv.DictReader(io.StringIO(plain.text))}
        home = rows["Kotihoito"]
        assert home["Kuukausi"] == "11/2026" and "Yhteensä" in rows
        cents = int(by_plain["home_care"]["charged_cents"])
        assert home["Veloitettu (€)"] == str(Decimal(cents) / 100).replace(".", ","), (home, cents)
        assert "," in home["Käytetyt yksiköt"] and "." not in home["Käytetyt yksiköt"]
        swedish = await rep.get("/funders/091/reports/monthly.csv?period=2026-11&format=spreadsheet&lang=sv")
        assert swedish.content.decode("utf-8-sig").split(";")[:3] == ["Anordnare", "Månad", "Tjänst"]
        prices = (await rep.get("/funders/091/reports/prices.csv?category=home_care&format=spreadsheet")).content
        lines = prices.decode("utf-8-sig").split("\r\n")
        first = dict(zip(lines[0].split(";"), lines[1].split(";")))
        assert (first["Kuukausi"], first["Hinnaston keskihinta (€)"], first["Tuottajat, joilla hinta"]) == (
            "10/2026", "27,47", "34"), first
        await rep.get("/funders/091/reports/prices.csv?format=excel", status=422)
