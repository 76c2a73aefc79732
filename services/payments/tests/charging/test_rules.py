from datetime import date, datetime, timedelta, timezone

import pytest

from payments.charging import correction_rules, domain
from payments.charging.domain import ChargeRequest, PriceList, VoucherTerms
from seteli_shared.approvals import (APPROVED, REVOKED, SUSPENDED, ApprovalState, apply_approved,
                                     apply_change)
from seteli_shared.errors import DomainError
from seteli_shared.testing import approval_after as fold
from seteli_shared.testing import approval_change as change

TODAY = date(2026, 11, 24)
TERMS = VoucherTerms(funder_id="091", category="home_care", units_per_period_x100=2000, period="month",
                     value_per_unit_cents=1500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                     provider_id="p1")


T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
APPROVAL = ApprovalState(approval_id="a1", approved_at=T0)


def charge(**kw) -> ChargeRequest:
    base = dict(provider_id="p1", service_date=date(2026, 11, 20), units_x100=400, unit_price_cents=None)
    base.update(kw)
    return ChargeRequest(**base)


def reason(terms=TERMS, approved=True, used=0, req=None, approval=None, lists=(), deadline=None) -> str:  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        domain.validate_charge(terms, approval or (APPROVAL if approved else None), used, req or charge(), TODAY,
                               list(lists), charge_deadline_days=deadline)
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
    assert reason(req=charge(service_date=date(2026, 8, 25))) == "charge_deadline_passed"


def test_a_charge_is_on_time_until_the_funders_deadline_day_and_refused_after_it():
    # the default deadline: 90 days after the service date (2026-08-26 + 90 days = 2026-11-24, today)
    assert domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 8, 26)), TODAY).amount_cents
    with pytest.raises(DomainError) as e:
        domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 8, 25)), TODAY)
    assert (e.value.reason, e.value.details) == ("charge_deadline_passed",
                                                 {"deadline": "2026-11-23", "deadline_days": 90})
    # a funder's own term: 30 days
    assert domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 10, 25)), TODAY,
                                  charge_deadline_days=30).amount_cents
    assert reason(req=charge(service_date=date(2026, 10, 24)), deadline=30) == "charge_deadline_passed"


def test_unknown_voucher_answer_says_it_may_be_retried():
    with pytest.raises(DomainError) as e:
        domain.validate_charge(None, APPROVAL, 0, charge(), TODAY)
    assert e.value.status_code == 404 and e.value.details["retryable"] is True


def test_the_last_units_of_the_period_can_be_charged():
    assert domain.validate_charge(TERMS, APPROVAL, 1600, charge(), TODAY).amount_cents == 6000


def test_price_above_voucher_value_is_the_clients_own_share():
    # seed: price 25.00 EUR/h, voucher 15.00 EUR/h -> the client pays 10.00 EUR/h
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, unit_price_cents=2500), TODAY)
    assert (a.amount_cents, a.own_share_cents) == (1500, 1000)
    cheaper = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, unit_price_cents=1200), TODAY)
    assert (cheaper.amount_cents, cheaper.own_share_cents) == (1200, 0)


def test_monthly_units_renew_each_month_and_validity_units_do_not():
    assert domain.period_bounds(TERMS, date(2026, 2, 14)) == (date(2026, 2, 1), date(2026, 2, 28))
    whole = VoucherTerms(**{**TERMS.__dict__, "period": "validity"})
    assert domain.period_bounds(whole, date(2026, 2, 14)) == (date(2026, 1, 1), date(2026, 12, 31))


# ------------------------------------------------------------------ the approval's life cycle
def test_services_before_a_suspension_may_be_charged_and_those_from_its_date_not():
    suspended = fold(change(SUSPENDED, 1))
    assert domain.validate_charge(TERMS, suspended, 0, charge(service_date=date(2026, 11, 14)), TODAY).amount_cents
    assert reason(approval=suspended, req=charge(service_date=date(2026, 11, 15))) == "provider_suspended"
    assert reason(approval=suspended) == "provider_suspended"
    with pytest.raises(DomainError) as e:
        domain.check_approval_covers(suspended, date(2026, 11, 20))
    assert e.value.details == {"effective_from": "2026-11-15"}
    reinstated = fold(change(SUSPENDED, 1), change(APPROVED, 2))
    assert domain.validate_charge(TERMS, reinstated, 0, charge(), TODAY).amount_cents == 6000


def test_services_before_a_revocation_may_be_charged_and_a_revocation_is_final():
    revoked = fold(change(REVOKED, 1))
    assert reason(approval=revoked) == "provider_revoked"
    assert domain.validate_charge(TERMS, revoked, 0, charge(service_date=date(2026, 11, 14)), TODAY).amount_cents
    assert fold(change(REVOKED, 1), change(APPROVED, 5)) == revoked
    late = fold(change(APPROVED, 5), change(REVOKED, 1))
    assert (late.status, late.not_in_force_from) == (REVOKED, date(2026, 11, 15)), "whatever order they came in"


def test_a_suspension_heard_of_before_its_approval_refuses_and_the_approval_fills_in():
    early = apply_change(None, change(SUSPENDED, 1))
    assert early.approved_at is None
    assert reason(approval=early) == "provider_suspended"
    assert reason(approval=early, req=charge(service_date=date(2026, 11, 1))) == "provider_not_approved"
    assert apply_approved(early, "a1", T0).approved_at == T0


# ------------------------------------------------------------------ registered prices
def price_list(pid: str, effective_from: date, cents: int, published_hours: int = 0, **tariffs: int) -> PriceList:
    return PriceList(pid, effective_from, T0 + timedelta(hours=published_hours), cents, tariffs)


LISTS = [price_list("june", date(2026, 6, 1), 2800), price_list("nov", date(2026, 11, 1), 3000, sunday=4500,
                                                                   weekday_evening=3500)]


def test_the_price_in_force_is_the_latest_to_take_effect_on_or_before_the_service_date():
    assert domain.price_in_force(LISTS, date(2026, 5, 31)) is None
    assert domain.price_in_force(LISTS, date(2026, 6, 1)).price_list_id == "june"
    assert domain.price_in_force(LISTS, date(2026, 10, 31)).price_list_id == "june"
    assert domain.price_in_force(LISTS, date(2026, 11, 1)).price_list_id == "nov"
    # the same day: the one published last, whatever order they are given in
    same_day = [price_list("a", date(2026, 11, 1), 3100, published_hours=5), LISTS[1]]
    assert domain.price_in_force(same_day, date(2026, 11, 2)).price_list_id == "a"
    assert domain.price_in_force(same_day[::-1], date(2026, 11, 2)).price_list_id == "a"


def test_the_registered_price_is_the_tariffs_when_the_list_has_it_else_the_base():
    assert domain.registered_price(LISTS[1], "sunday") == 4500
    assert domain.registered_price(LISTS[1], "saturday") == 3000
    assert domain.registered_price(LISTS[1], None) == 3000


def test_a_price_above_the_registered_price_is_refused_naming_it_and_a_lower_one_is_taken_as_sent():
    terms = TERMS  # voucher value 15.00 EUR/h
    with pytest.raises(DomainError) as e:
        domain.validate_charge(terms, APPROVAL, 0, charge(unit_price_cents=3001), TODAY, LISTS)
    assert (e.value.reason, e.value.details["registered_price_cents"], e.value.details["price_list_id"]) == (
        "price_above_registered_price", 3000, "nov")
    a = domain.validate_charge(terms, APPROVAL, 0, charge(units_x100=100, unit_price_cents=2900), TODAY, LISTS)
    assert (a.unit_price_cents, a.amount_cents, a.own_share_cents, a.price_registered, a.registered_price_cents) == (
        2900, 1500, 1400, True, 3000)
    assert reason(req=charge(unit_price_cents=4501, tariff="sunday"), lists=LISTS) == "price_above_registered_price"


def test_without_a_price_sent_the_registered_price_is_charged_and_the_own_share_follows():
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=150, tariff="sunday"), TODAY, LISTS)
    # 1.5 h at 45.00: the voucher pays 1.5 x 15.00, the client 1.5 x 30.00
    assert (a.unit_price_cents, a.amount_cents, a.own_share_cents, a.price_list_id) == (4500, 2250, 4500, "nov")
    old = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, service_date=date(2026, 10, 31)), TODAY,
                                 LISTS)
    assert (old.unit_price_cents, old.own_share_cents, old.price_list_id) == (2800, 1300, "june")
    rounded = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=33, tariff="weekday_evening"), TODAY,
                                     LISTS)
    assert (rounded.amount_cents, rounded.own_share_cents) == (495, 660), "0.33 x 15.00 and 0.33 x 20.00"


def test_without_a_price_list_the_voucher_value_or_the_sent_price_and_no_tariff():
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(), TODAY)
    assert (a.unit_price_cents, a.price_registered, a.registered_price_cents, a.price_list_id) == (
        1500, False, None, None)
    sent = domain.validate_charge(TERMS, APPROVAL, 0, charge(unit_price_cents=99999), TODAY, LISTS[:0])
    assert (sent.unit_price_cents, sent.price_registered) == (99999, False)
    assert reason(req=charge(tariff="saturday")) == "tariff_not_available"
    assert reason(req=charge(tariff="saturday", service_date=date(2026, 5, 1)), lists=LISTS,
                  deadline=365) == "tariff_not_available"
    assert reason(req=charge(tariff="holiday"), lists=LISTS) == "unknown_tariff"


# ------------------------------------------------------------------ corrections after settlement
SETTLED = correction_rules.ChargeFigures(units_x100=400, amount_cents=10000, own_share_cents=2000, client_fee_cents=None,
                               fee_cents=500)


def test_a_partial_correction_takes_units_amount_own_share_and_fee_in_proportion():
    fix = correction_rules.correct(SETTLED, SETTLED, reversal=False, units_x100=300)
    assert fix.kind == correction_rules.PARTIAL
    assert fix.removed == correction_rules.ChargeFigures(100, 2500, 500, None, 125) and fix.net_cents == 2375
    assert fix.after == correction_rules.ChargeFigures(300, 7500, 1500, None, 375)
    # a second one starts from what the first left; a lower amount alone keeps the units
    again = correction_rules.correct(SETTLED, fix.after, reversal=False, amount_cents=5000)
    assert (again.removed.units_x100, again.removed.amount_cents, again.removed.fee_cents) == (0, 2500, 125)
    # a reversal takes what is left, whatever was corrected before: the fee all given back
    rest = correction_rules.correct(SETTLED, again.after, reversal=True)
    assert rest.kind == correction_rules.REVERSAL and rest.after == correction_rules.ChargeFigures(0, 0, 0, None, 0)
    total = [fix.removed, again.removed, rest.removed]
    assert (sum(x.amount_cents for x in total), sum(x.fee_cents for x in total)) == (10000, 500)


@pytest.mark.parametrize("kw, reason", [
    ({"units_x100": 500}, "correction_increases_charge"),
    ({"amount_cents": 10001}, "correction_increases_charge"),
    ({"units_x100": 200, "amount_cents": 6000}, "correction_increases_charge"),  # 2 h give 50.00 at most
    ({"units_x100": 400}, "correction_changes_nothing"),
    ({}, "invalid_request"),
])
def test_a_correction_never_raises_a_charge(kw, reason):  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        correction_rules.correct(SETTLED, SETTLED, reversal=False, **kw)
    assert e.value.reason == reason


def test_a_charge_reversed_cannot_be_corrected_again():
    gone = correction_rules.correct(SETTLED, SETTLED, reversal=True).after
    with pytest.raises(DomainError) as e:
        correction_rules.correct(SETTLED, gone, reversal=True)
    assert (e.value.reason, e.value.status_code) == ("charge_already_reversed", 409)
