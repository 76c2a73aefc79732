"""Every reason a charge is refused, through every way a charge comes in: ``POST /charges`` one at a time, a
JSON bulk and a streamed CSV file, each against PostgreSQL with the projections fed by events on the real
RabbitMQ (``live``, conftest.py). The same lines in the same order answer the same outcome and reason, line
for line, whichever entry point they came through (the charge engine is one)."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from payments.models import Charge
from seteli_shared.auth import mint
from seteli_shared.codes import new_code
from seteli_shared.events import (PriceListPublished, ProviderApproved, ProviderRevoked, ProviderSuspended,
                                  VoucherIssued, VoucherProviderChosen, VoucherRevoked)
from seteli_shared.messaging import OutboxMessage
from seteli_shared.testing import charges_announced

JAN1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
P = "prov-entry"
CODE_OK, CODE_OTHER = new_code(), new_code()


def charger() -> dict:
    return {"Authorization": f"Bearer {mint('t:provider_charger', ['provider_charger'], provider_id=P)}"}


def issued(voucher_id: str, funder_id: str = "091", category: str = "home_care", **kw) -> VoucherIssued:  # noqa: ANN003
    base = dict(voucher_id=voucher_id, funder_id=funder_id, client_ref="c-1", decision_ref=f"D-{voucher_id}",
                category=category, unit="hour", units_per_period=Decimal("10"), period="validity",
                value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                issued_at=JAN1)
    return VoucherIssued(**{**base, **kw})


def chosen(voucher_id: str, provider_id: str = P, funder_id: str = "091", category: str = "home_care",
           at: datetime = JAN1, effective_from: date | None = None) -> VoucherProviderChosen:
    return VoucherProviderChosen(voucher_id=voucher_id, funder_id=funder_id, provider_id=provider_id,
                                 category=category, chosen_at=at, effective_from=effective_from)


def approved(funder_id: str = "091", category: str = "home_care", provider_id: str = P) -> ProviderApproved:
    return ProviderApproved(approval_id=f"ap-{provider_id}-{funder_id}-{category}", provider_id=provider_id,
                            funder_id=funder_id, category=category, approved_at=JAN1)


async def world(w) -> None:  # noqa: ANN001
    """The facts every case needs, as the registry and vouchers would announce them."""
    await w.publish(
        approved(), approved(category="cleaning"), approved(category="family_work"), approved("093"),
        approved(provider_id="prov-other"),
        ProviderSuspended(approval_id=f"ap-{P}-091-family_work", provider_id=P, funder_id="091",
                          category="family_work", reason="insurance_lapsed", effective_from=date(2026, 6, 1),
                          suspended_at=datetime(2026, 5, 28, tzinfo=timezone.utc)),
        ProviderRevoked(approval_id=f"ap-{P}-093-home_care", provider_id=P, funder_id="093", category="home_care",
                        reason="other", effective_from=date(2026, 6, 1),
                        revoked_at=datetime(2026, 5, 28, tzinfo=timezone.utc)),
        PriceListPublished(price_list_id="pl-june", provider_id=P, funder_id="091", category="home_care", unit="hour",
                           unit_price_cents=3000, effective_from=date(2026, 6, 1), published_at=JAN1),
        source="registry")
    await w.publish(
        issued("v-ok", voucher_code=CODE_OK), chosen("v-ok"),
        issued("v-small", units_per_period=Decimal("2")), chosen("v-small"),
        issued("v-nochoice"),
        issued("v-other", voucher_code=CODE_OTHER), chosen("v-other", "prov-other"),
        issued("v-092", funder_id="092"), chosen("v-092", funder_id="092"),
        issued("v-suspended", category="family_work"), chosen("v-suspended", category="family_work"),
        issued("v-093", funder_id="093"), chosen("v-093", funder_id="093"),
        issued("v-short", valid_until=date(2026, 3, 31)), chosen("v-short"),
        issued("v-budget", kind="personal_budget", units_per_period=Decimal("0"), value_per_unit_cents=0,
               budget_cents=10000, categories=["home_care", "cleaning"]), chosen("v-budget"),
        issued("v-rev"), chosen("v-rev"), issued("v-rev-old"), chosen("v-rev-old"),
        issued("v-switch"), chosen("v-switch"),
        chosen("v-switch", "prov-other", at=datetime(2026, 6, 1, tzinfo=timezone.utc), effective_from=date(2026, 6, 1)),
        source="vouchers")
    await w.publish(
        VoucherRevoked(voucher_id="v-rev", funder_id="091", decision_ref="D-v-rev", decision_version=2,
                       category="home_care", effective_from=date(2026, 6, 10),
                       revoked_at=datetime(2026, 6, 12, tzinfo=timezone.utc)),
        VoucherRevoked(voucher_id="v-rev-old", funder_id="091", decision_ref="D-v-rev-old", decision_version=2,
                       category="home_care", effective_from=date(2026, 5, 1),
                       revoked_at=datetime(2026, 5, 1, tzinfo=timezone.utc)),
        source="vouchers")


def line(ref: str, voucher: str | None, day: str, units: str, *, code: str | None = None, price: int | None = None,
         tariff: str | None = None, category: str | None = None) -> dict:
    out = {"voucher_id": voucher, "voucher_code": code, "provider_reference": ref, "service_date": day,
           "units": units, "unit_price_cents": price, "tariff": tariff, "category": category}
    return {k: v for k, v in out.items() if v is not None}


#: (line, outcome, reason): in this order, through each entry point (today is 2026-06-20)
CASES = [
    (line("ok-1", "v-ok", "2026-06-18", "1"), "accepted", None),
    (line("ok-code", None, "2026-06-18", "1", code=CODE_OK), "accepted", None),
    (line("ok-1", "v-ok", "2026-06-18", "1"), "repeated", None),
    (line("ok-1", "v-ok", "2026-06-18", "2"), "refused", "duplicate_reference"),
    (line("none", "v-none", "2026-06-18", "1"), "refused", "voucher_not_found"),
    (line("code-none", None, "2026-06-18", "1", code="ZZZZZZZZZZZ"), "refused", "voucher_not_found"),
    (line("code-other", None, "2026-06-18", "1", code=CODE_OTHER), "refused", "voucher_not_found"),
    (line("nochoice", "v-nochoice", "2026-06-18", "1"), "refused", "provider_not_chosen"),
    (line("other", "v-other", "2026-06-18", "1"), "refused", "not_chosen_provider"),
    (line("unapproved", "v-092", "2026-06-18", "1"), "refused", "provider_not_approved"),
    (line("suspended", "v-suspended", "2026-06-10", "1"), "refused", "provider_suspended"),
    (line("before-suspension", "v-suspended", "2026-05-20", "1"), "accepted", None),
    (line("revoked", "v-093", "2026-06-10", "1"), "refused", "provider_revoked"),
    (line("future", "v-ok", "2026-06-21", "1"), "refused", "service_date_in_future"),
    (line("outside", "v-short", "2026-04-02", "1"), "refused", "service_date_outside_validity"),
    (line("late", "v-ok", "2026-03-01", "1"), "refused", "charge_deadline_passed"),
    (line("no-tariff", "v-ok", "2026-05-20", "1", tariff="sunday"), "refused", "tariff_not_available"),
    (line("too-dear", "v-ok", "2026-06-18", "1", price=3500), "refused", "price_above_registered_price"),
    (line("small-1", "v-small", "2026-06-18", "2"), "accepted", None),
    (line("small-2", "v-small", "2026-06-18", "0.5"), "refused", "units_exceeded"),
    (line("budget-cat", "v-budget", "2026-06-18", "1", price=1000, category="family_work"), "refused",
     "category_not_on_voucher"),
    (line("budget-noprice", "v-budget", "2026-06-18", "1", category="cleaning"), "refused", "unit_price_required"),
    (line("budget-1", "v-budget", "2026-06-18", "2", price=4000, category="cleaning"), "accepted", None),
    (line("budget-2", "v-budget", "2026-06-18", "1", price=4000, category="cleaning"), "refused", "budget_exceeded"),
    (line("after-revocation", "v-rev", "2026-06-15", "1"), "refused", "service_after_revocation"),
    (line("before-revocation", "v-rev", "2026-06-09", "1"), "accepted", None),
    (line("grace-passed", "v-rev-old", "2026-04-15", "1"), "refused", "revoked_grace_passed"),
    (line("switched", "v-switch", "2026-06-10", "1"), "refused", "provider_switched"),
    (line("before-switch", "v-switch", "2026-05-29", "1"), "accepted", None),
]
SINGLE_STATUS = {"accepted": {201}, "repeated": {200}, "refused": {404, 409, 422}}
CSV_COLUMNS = ("voucher_id", "voucher_code", "provider_reference", "service_date", "units", "unit_price_cents",
               "tariff", "category")


async def single(w) -> list[tuple]:  # noqa: ANN001
    out = []
    for body, _outcome, _reason in CASES:
        r = await w.client.post("/charges", json=body, headers=charger())
        if r.status_code in (200, 201):
            out.append(("accepted" if r.status_code == 201 else "repeated", None, r.status_code))
        else:
            out.append(("refused", r.json()["error"]["reason"], r.status_code))
    return out


async def json_bulk(w) -> list[tuple]:  # noqa: ANN001
    r = await w.client.post("/charges/bulk", json=[body for body, _o, _r in CASES], headers=charger())
    assert r.status_code == 200, r.text
    return [(x["status"], x["reason"], None) for x in r.json()["results"]]


async def csv_file(w) -> list[tuple]:  # noqa: ANN001
    rows = [";".join(CSV_COLUMNS)] + [";".join(str(body.get(c, "")) for c in CSV_COLUMNS) for body, _o, _r in CASES]
    r = await w.client.post("/charges/bulk", content="\n".join(rows).encode(),
                            headers={**charger(), "content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert [x["line"] for x in r.json()["results"]] == list(range(2, len(CASES) + 2))
    return [(x["status"], x["reason"], None) for x in r.json()["results"]]


@pytest.mark.parametrize("entry", [single, json_bulk, csv_file], ids=["single", "json_bulk", "csv"])
async def test_every_refusal_answers_its_reason_through_every_entry_point(live, entry):  # noqa: ANN001
    w = live
    await world(w)
    got = await entry(w)
    assert [(o, r) for o, r, _status in got] == [(o, r) for _line, o, r in CASES]
    for (o, _r, status), (body, _o, _r2) in zip(got, CASES):
        assert status is None or status in SINGLE_STATUS[o], (body, status)
    accepted = sum(1 for _line, o, _r in CASES if o == "accepted")
    async with w.app.state.runtime.sessions() as session:
        charges = (await session.execute(select(func.count()).select_from(Charge))).scalar_one()
        rows = (await session.execute(select(OutboxMessage.routing_key, OutboxMessage.body))).all()
    announced = charges_announced(rows)
    assert charges == len(announced) == len({e.charge_id for e in announced}) == accepted
    # a single charge announces itself (charge.accepted.v1); a bulk its chunk's charges (charge.accepted.v2)
    keys = {key for key, _ in rows if key.startswith("charge.accepted.")}
    assert keys == ({"charge.accepted.v1"} if entry is single else {"charge.accepted.v2"})
    await w.check()
