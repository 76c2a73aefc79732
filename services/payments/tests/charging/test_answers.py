"""``POST /charges`` answers a new charge from the engine's values (``rows.public``): the same answer, field for
field and byte for byte as JSON, as the table's model made into a ``ChargePublic`` the ordinary way
(``ChargePublic.of(rows.as_charge(c))``), whatever the amounts, tariff, price list, client fee and dates."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from payments.charging import domain, engine, rows
from payments.charging.schemas import ChargePublic

optional_cents = st.none() | st.integers(0, 10_000_000)


@st.composite
def new_charges(draw) -> engine.NewCharge:  # noqa: ANN001
    req = domain.ChargeRequest(
        provider_id=draw(st.sampled_from(["p1", "prov-" + "x" * 30])),
        service_date=date(2026, 1, 1) + timedelta(days=draw(st.integers(0, 700))),
        units_x100=draw(st.integers(1, 1_000_000)), unit_price_cents=draw(optional_cents),
        tariff=draw(st.none() | st.sampled_from(["weekday", "weekday_evening", "saturday", "sunday"])))
    amounts = domain.ChargeAmounts(
        unit_price_cents=draw(st.integers(1, 10_000_000)), amount_cents=draw(st.integers(0, 10**11)),
        own_share_cents=draw(st.integers(0, 10**9)), price_registered=draw(st.booleans()),
        registered_price_cents=draw(optional_cents), price_list_id=draw(st.none() | st.just("pl-1")),
        client_fee_cents=draw(optional_cents))
    at = datetime(2026, 6, 1, tzinfo=timezone.utc) + timedelta(microseconds=draw(st.integers(0, 10**13)))
    return engine.NewCharge(id=draw(st.uuids()).hex, voucher_id="v-" + draw(st.text("abc0123", min_size=1, max_size=20)),
                            funder_id="091", category=draw(st.sampled_from(["home_care", "cleaning"])),
                            provider_reference=draw(st.text("ABC-123 ", min_size=1, max_size=100)), req=req,
                            amounts=amounts, accepted_at=at)


@settings(max_examples=300, deadline=None)
@given(new_charges())
def test_a_new_charge_is_answered_as_the_ordinary_way_answers_it(c: engine.NewCharge) -> None:
    fast, ordinary = rows.public(c), ChargePublic.of(rows.as_charge(c))
    assert fast.model_dump(mode="json") == ordinary.model_dump(mode="json")
    assert fast.model_dump_json() == ordinary.model_dump_json()
    assert ChargePublic.model_validate(fast.model_dump(mode="json")) == ordinary


@settings(max_examples=300, deadline=None)
@given(new_charges())
def test_a_new_charge_is_answered_in_json_as_the_model_dumps_it(c: engine.NewCharge) -> None:
    """``rows.public_values`` (what ``POST /charges`` answers, written without the model) is the model's JSON dump,
    key for key in the same order; ``public_json`` answers it from its first charge on."""
    ordinary = ChargePublic.of(rows.as_charge(c)).model_dump(mode="json")
    direct = rows.public_values(c)
    assert direct == ordinary
    assert list(direct) == list(ordinary)
    assert json.dumps(direct) == json.dumps(ordinary)
    assert rows.public_json(c) == ordinary
    assert rows.public_json.direct is True


def test_another_offset_or_a_naive_time_is_answered_as_the_model_dumps_it() -> None:
    req = domain.ChargeRequest(provider_id="p1", service_date=date(2026, 6, 1), units_x100=150, unit_price_cents=None)
    amounts = domain.ChargeAmounts(unit_price_cents=2500, amount_cents=3750, own_share_cents=0, price_registered=False,
                                   registered_price_cents=None, price_list_id=None, client_fee_cents=None)
    for at in (datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=3))), datetime(2026, 6, 1, 12, 0, 0, 5)):
        c = engine.NewCharge(id="c1", voucher_id="v1", funder_id="091", category="home_care", provider_reference="r",
                             req=req, amounts=amounts, accepted_at=at)
        assert rows.public_values(c) == ChargePublic.of(rows.as_charge(c)).model_dump(mode="json")
