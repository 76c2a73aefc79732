"""The charging rules of the issue's validation list and the amounts of each voucher kind, each over HTTP
against PostgreSQL with the projections fed by events on the real RabbitMQ (``live``, conftest.py):
every refusal answers its own machine-readable reason."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from seteli_shared.auth import mint
from seteli_shared.events import ProviderApproved, VoucherIssued, VoucherProviderChosen, VoucherRevoked

JAN1 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def charger(provider_id: str) -> dict:
    return {"Authorization": f"Bearer {mint('t:provider_charger', ['provider_charger'], provider_id=provider_id)}"}


def issued(voucher_id: str, **kw) -> VoucherIssued:  # noqa: ANN003
    base = dict(voucher_id=voucher_id, funder_id="091", client_ref="c-1", decision_ref=f"D-{voucher_id}",
                category="home_care", unit="hour", units_per_period=Decimal("10"), period="validity",
                value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                issued_at=JAN1)
    return VoucherIssued(**{**base, **kw})


def chosen(voucher_id: str, provider_id: str) -> VoucherProviderChosen:
    return VoucherProviderChosen(voucher_id=voucher_id, funder_id="091", provider_id=provider_id,
                                 category="home_care", chosen_at=JAN1)


def approved(provider_id: str, category: str = "home_care") -> ProviderApproved:
    return ProviderApproved(approval_id=f"ap-{provider_id}-{category}", provider_id=provider_id, funder_id="091",
                            category=category, approved_at=JAN1)


async def attempt(w, provider_id: str, voucher_id: str, ref: str, day: str, units: str,  # noqa: ANN001, ANN201
                  **extra):  # noqa: ANN003
    return await w.client.post("/charges", headers=charger(provider_id), json={
        "voucher_id": voucher_id, "provider_reference": ref, "service_date": day, "units": units, **extra})


def refusal(r) -> tuple:  # noqa: ANN001
    return r.status_code, r.json()["error"]["reason"]


async def test_every_refusal_of_a_charge_has_its_reason_and_a_late_voucher_is_not_lost(live):  # noqa: ANN001
    w, p = live, "prov-rules"
    v = await w.voucher(p, 1, units="10")
    # an unknown voucher: 404, and the answer says a retry may find it
    r = await attempt(w, p, "v-none", "u-1", "2026-06-19", "1")
    assert refusal(r) == (404, "voucher_not_found") and r.json()["error"]["details"]["retryable"] is True
    # a voucher chosen but not yet known here as issued: the same retryable answer; once its VoucherIssued
    # arrives the same request is accepted (nothing is lost)
    await w.publish(chosen("v-late", p), source="vouchers")
    r = await attempt(w, p, "v-late", "late-1", "2026-06-19", "1")
    assert refusal(r) == (404, "voucher_not_found") and r.json()["error"]["details"]["retryable"] is True
    await w.publish(issued("v-late"), source="vouchers")
    r = await attempt(w, p, "v-late", "late-1", "2026-06-19", "1")
    assert (r.status_code, r.json()["amount_cents"]) == (201, 2500), r.text
    # another provider than the client chose
    await w.publish(approved("prov-other"), source="registry")
    assert refusal(await attempt(w, "prov-other", v, "o-1", "2026-06-19", "1")) == (422, "not_chosen_provider")
    # the chosen provider is not approved for the voucher's funder and category
    await w.publish(issued("v-unapproved"), chosen("v-unapproved", "prov-unapproved"), source="vouchers")
    assert refusal(await attempt(w, "prov-unapproved", "v-unapproved", "n-1", "2026-06-19", "1")) == (
        422, "provider_not_approved")
    # dates: outside the voucher's validity, not yet delivered
    assert refusal(await attempt(w, p, v, "d-1", "2025-12-31", "1")) == (422, "service_date_outside_validity")
    assert refusal(await attempt(w, p, v, "d-2", "2026-06-21", "1")) == (422, "service_date_in_future")
    # units beyond what is left (10 h, 1 charged below first)
    assert (await attempt(w, p, v, "a-1", "2026-06-18", "2")).status_code == 201
    r = await attempt(w, p, v, "a-2", "2026-06-18", "9")
    assert refusal(r) == (422, "units_exceeded") and r.json()["error"]["details"]["units_left"] == "8.00"
    # a duplicate: the same reference with other figures is refused, with the same ones it is the first charge
    first = await attempt(w, p, v, "a-1", "2026-06-18", "2")
    assert first.status_code == 200
    r = await attempt(w, p, v, "a-1", "2026-06-18", "3")
    assert refusal(r) == (409, "duplicate_reference")
    assert r.json()["error"]["details"]["charge_id"] == first.json()["id"]
    # a revoked voucher: services before the revocation within the 30-day grace, none on or after it
    await w.publish(VoucherRevoked(voucher_id=v, funder_id="091", decision_ref=f"D-{p}-1", decision_version=1,
                                   category="home_care", effective_from=date(2026, 6, 10),
                                   revoked_at=datetime(2026, 6, 12, 8, tzinfo=timezone.utc)), source="vouchers")
    assert (await attempt(w, p, v, "rv-1", "2026-06-09", "1")).status_code == 201
    r = await attempt(w, p, v, "rv-2", "2026-06-10", "1")
    assert refusal(r) == (422, "service_after_revocation") and r.json()["error"]["details"]["revoked_from"] == \
        "2026-06-10"
    w.clock.advance(days=22, hours=15)  # 2026-07-13: 30 days after the revocation was made
    r = await attempt(w, p, v, "rv-3", "2026-06-08", "1")
    assert refusal(r) == (422, "revoked_grace_passed") and r.json()["error"]["details"]["grace_until"] == "2026-07-12"
    await w.check()


async def test_the_amount_of_each_voucher_kind(live):  # noqa: ANN001
    w, p = live, "prov-kinds"
    await w.publish(approved(p), approved(p, "cleaning"), source="registry")
    await w.publish(
        issued("k-service"), chosen("k-service", p),
        issued("k-client", kind="client_voucher", value_per_unit_cents=2800, max_value_per_unit_cents=2800,
               client_fee_cents=500), chosen("k-client", p),
        issued("k-budget", kind="personal_budget", units_per_period=Decimal("0"), value_per_unit_cents=0,
               budget_cents=10000, categories=["home_care", "cleaning"]), chosen("k-budget", p),
        source="vouchers")
    # a service voucher: the funder pays units x min(price, value), the client the rest to the provider
    r = await attempt(w, p, "k-service", "s-1", "2026-06-19", "2", unit_price_cents=3000)
    assert (r.status_code, r.json()["amount_cents"], r.json()["own_share_cents"]) == (201, 5000, 1000), r.text
    cheaper = await attempt(w, p, "k-service", "s-2", "2026-06-19", "1", unit_price_cents=2000)
    assert (cheaper.json()["amount_cents"], cheaper.json()["own_share_cents"]) == (2000, 0)
    # a client voucher: the price up to the maximum, no own share to the provider, the client's fee recorded
    r = await attempt(w, p, "k-client", "c-1", "2026-06-19", "2", unit_price_cents=3000)
    assert (r.status_code, r.json()["amount_cents"], r.json()["own_share_cents"], r.json()["client_fee_cents"]) == (
        201, 5600, 0, 1000), r.text
    # a personal budget: the price from the budget, any of its categories, never beyond it
    r = await attempt(w, p, "k-budget", "b-1", "2026-06-19", "2", unit_price_cents=4000, category="cleaning")
    assert (r.status_code, r.json()["amount_cents"], r.json()["category"]) == (201, 8000, "cleaning"), r.text
    r = await attempt(w, p, "k-budget", "b-2", "2026-06-19", "1", unit_price_cents=4000)
    assert refusal(r) == (422, "budget_exceeded") and r.json()["error"]["details"]["budget_left_cents"] == 2000
    r = await attempt(w, p, "k-budget", "b-3", "2026-06-19", "1", unit_price_cents=1000, category="family_work")
    assert refusal(r) == (422, "category_not_on_voucher")
    assert refusal(await attempt(w, p, "k-budget", "b-4", "2026-06-19", "1")) == (422, "unit_price_required")
    assert (await attempt(w, p, "k-budget", "b-5", "2026-06-19", "0.5", unit_price_cents=4000)).status_code == 201
    await w.check()
