from datetime import date
from decimal import Decimal

import pytest

from payments import domain
from payments.domain import ChargeRequest, VoucherTerms
from seteli_shared.errors import DomainError

TODAY = date(2026, 11, 24)
TERMS = VoucherTerms(funder_id="091", category="home_care", units_per_period_x100=2000, period="month",
                     value_per_unit_cents=1500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                     provider_id="p1")


def charge(**kw) -> ChargeRequest:
    base = dict(provider_id="p1", service_date=date(2026, 11, 20), units_x100=400, unit_price_cents=None)
    base.update(kw)
    return ChargeRequest(**base)


def reason(terms=TERMS, approved=True, used=0, req=None) -> str:  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        domain.validate_charge(terms, approved, used, req or charge(), TODAY)
    return e.value.reason


def test_each_refusal_has_its_reason():
    assert reason(terms=None) == "voucher_not_found"
    assert reason(terms=VoucherTerms(**{**TERMS.__dict__, "provider_id": None})) == "provider_not_chosen"
    assert reason(req=charge(provider_id="p2")) == "not_chosen_provider"
    assert reason(approved=False) == "provider_not_approved"
    assert reason(req=charge(service_date=date(2026, 11, 25))) == "service_date_in_future"
    assert reason(terms=VoucherTerms(**{**TERMS.__dict__, "valid_from": date(2026, 11, 21)})) == \
        "service_date_outside_validity"
    assert reason(used=1700) == "units_exceeded"
    assert reason(req=charge(units_x100=0)) == "invalid_units"


def test_unknown_voucher_answer_says_it_may_be_retried():
    with pytest.raises(DomainError) as e:
        domain.validate_charge(None, True, 0, charge(), TODAY)
    assert e.value.status_code == 404 and e.value.details["retryable"] is True


def test_the_last_units_of_the_period_can_be_charged():
    assert domain.validate_charge(TERMS, True, 1600, charge(), TODAY).amount_cents == 6000


def test_price_above_voucher_value_is_the_clients_own_share():
    # seed: price 25.00 EUR/h, voucher 15.00 EUR/h -> the client pays 10.00 EUR/h
    a = domain.validate_charge(TERMS, True, 0, charge(units_x100=100, unit_price_cents=2500), TODAY)
    assert (a.amount_cents, a.own_share_cents) == (1500, 1000)
    cheaper = domain.validate_charge(TERMS, True, 0, charge(units_x100=100, unit_price_cents=1200), TODAY)
    assert (cheaper.amount_cents, cheaper.own_share_cents) == (1200, 0)


def test_monthly_units_renew_each_month_and_validity_units_do_not():
    assert domain.period_bounds(TERMS, date(2026, 2, 14)) == (date(2026, 2, 1), date(2026, 2, 28))
    whole = VoucherTerms(**{**TERMS.__dict__, "period": "validity"})
    assert domain.period_bounds(whole, date(2026, 2, 14)) == (date(2026, 1, 1), date(2026, 12, 31))


def test_settlement_of_100_euros_is_95_net_and_5_fee():
    s = domain.settle([10000], Decimal("0.05"))
    assert (s.gross_cents, s.fee_cents, s.net_cents, s.charge_fees) == (10000, 500, 9500, [500])


def test_settlement_fee_is_rounded_once_and_spread_over_charges_to_the_cent():
    s = domain.settle([333, 333, 334], Decimal("0.05"))
    assert s.fee_cents == 50 and sum(s.charge_fees) == 50 and s.net_cents == 950


def test_postings_balance():
    s = domain.settle([12345], Decimal("0.05"))
    assert sum(a for _, a in domain.settlement_postings("p1", s)) == 0
    assert sum(a for _, a in domain.charge_postings("091", "p1", 12345)) == 0
    with pytest.raises(AssertionError):
        domain.balanced([("a", 1), ("b", -2)])


def test_a_funders_contract_rate_wins_over_the_default():
    assert domain.fee_rate_for("0.03", Decimal("0.05")) == Decimal("0.03")
    assert domain.fee_rate_for("0", Decimal("0.05")) == Decimal("0")
    assert domain.fee_rate_for(None, Decimal("0.05")) == Decimal("0.05"), "a funder not heard of: the default"
    with pytest.raises(AssertionError):
        domain.fee_rate_for("1.2", Decimal("0.05"))


def test_fee_rate_range():
    assert domain.fee_rate_in_range(Decimal("0")) and domain.fee_rate_in_range(Decimal("0.9999"))
    assert not domain.fee_rate_in_range(Decimal("1")) and not domain.fee_rate_in_range(Decimal("-0.01"))
    assert not domain.fee_rate_in_range(Decimal("NaN"))


def test_settlement_at_a_3_percent_contract():
    s = domain.settle([10000, 2345], Decimal("0.03"))
    assert (s.gross_cents, s.fee_cents, s.net_cents) == (12345, 370, 11975)
    assert sum(s.charge_fees) == 370
