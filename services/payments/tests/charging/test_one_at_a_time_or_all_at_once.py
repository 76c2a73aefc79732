"""A random set of charge lines, charged one at a time (``POST /charges``, each its own batch of one) and all at
once (one JSON bulk), against PostgreSQL and the real RabbitMQ (``live``, conftest.py): the same answer for
every line and the same ledger (each account's balance and number of entries). Each example charges for a
provider and funder of its own, so that the examples share the app without sharing a voucher."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seteli_shared.auth import mint
from seteli_shared.events import ProviderApproved, VoucherIssued, VoucherProviderChosen

from .ledgers import ledger_sums as _ledger

JAN1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
VOUCHERS = 3
_examples = itertools.count()

lines_strategy = st.lists(st.tuples(
    st.integers(min_value=0, max_value=VOUCHERS),        # the voucher (the last one unknown)
    st.sampled_from([f"r{i}" for i in range(6)]),        # references repeat: repeated and duplicate lines
    st.integers(min_value=1, max_value=22),              # a day of June (after the 20th: in the future)
    st.sampled_from(["0.25", "0.5", "1", "1.5", "3"]),   # units
    st.sampled_from([None, 2000, 2500, 3000]),           # the price sent
), min_size=1, max_size=12)


async def _side(w, side: str, n: int) -> tuple[str, str, dict]:  # noqa: ANN001
    """A provider and funder of this example's side, with its vouchers (2, 4 and 6 hours a month)."""
    provider, funder = f"p{side}{n}", f"f{side}{n}"
    events = [VoucherIssued(voucher_id=f"v{side}{n}-{i}", funder_id=funder, client_ref="c", decision_ref=f"D{i}",
                            category="home_care", unit="hour", units_per_period=Decimal(2 * (i + 1)), period="month",
                            value_per_unit_cents=2500, valid_from=JAN1.date(), valid_until=JAN1.date().replace(
                                month=12, day=31), issued_at=JAN1)
              for i in range(VOUCHERS)]
    events += [VoucherProviderChosen(voucher_id=f"v{side}{n}-{i}", funder_id=funder, provider_id=provider,
                                     category="home_care", chosen_at=JAN1) for i in range(VOUCHERS)]
    await w.publish(ProviderApproved(approval_id=f"a{side}{n}", provider_id=provider, funder_id=funder,
                                     category="home_care", approved_at=JAN1), source="registry")
    await w.publish(*events, source="vouchers")
    headers = {"Authorization": f"Bearer {mint('t:c', ['provider_charger'], provider_id=provider)}"}
    return provider, funder, headers


def _bodies(drawn: list, side: str, n: int) -> list[dict]:
    out = []
    for voucher, ref, day, units, price in drawn:
        body = {"voucher_id": f"v{side}{n}-{voucher}", "provider_reference": ref, "service_date": f"2026-06-{day:02d}",
                "units": units}
        if price is not None:
            body["unit_price_cents"] = price
        out.append(body)
    return out


def _answers(results: list[tuple]) -> list[tuple]:
    """(outcome, reason, for a repeated line the line whose charge it repeats)."""
    made = {charge_id: i for i, (status, _reason, charge_id) in enumerate(results) if status == "accepted"}
    return [(s, r, made.get(c) if s == "repeated" else None) for s, r, c in results]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=lines_strategy)
async def test_one_at_a_time_and_all_at_once_answer_alike_and_leave_the_same_ledger(live, drawn):  # noqa: ANN001
    w, n = live, next(_examples)
    (pa, fa, ha), (pb, fb, hb) = await _side(w, "a", n), await _side(w, "b", n)
    one_by_one = []
    for body in _bodies(drawn, "a", n):
        r = await w.client.post("/charges", json=body, headers=ha)
        if r.status_code in (200, 201):
            one_by_one.append(("accepted" if r.status_code == 201 else "repeated", None, r.json()["id"]))
        else:
            one_by_one.append(("refused", r.json()["error"]["reason"], None))
    r = await w.client.post("/charges/bulk", json=_bodies(drawn, "b", n), headers=hb)
    assert r.status_code == 200, r.text
    at_once = [(x["status"], x["reason"], x["charge_id"]) for x in r.json()["results"]]
    assert _answers(one_by_one) == _answers(at_once)
    assert await _ledger(w, pa, fa) == await _ledger(w, pb, fb)
