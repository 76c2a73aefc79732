from decimal import Decimal

import pytest

from seteli_shared.events import Envelope, VoucherProviderChosen
from seteli_shared.money import allocate, euros, fee_cents, round_cents, to_hundredths, units_amount_cents
from seteli_shared.privacy import contains_personal_identity_code


def test_five_percent_fee_on_one_hundred_euros_is_five_euros():
    assert fee_cents(10000, Decimal("0.05")) == 500


@pytest.mark.parametrize("gross,fee", [(10, 1), (9, 0), (30, 2), (1999, 100), (12345, 617)])
def test_fee_rounds_half_up_to_whole_cents(gross, fee):
    # 10 * 5 % = 0.5 -> 1 ; 9 * 5 % = 0.45 -> 0 ; 30 * 5 % = 1.5 -> 2 ; 12345 * 5 % = 617.25 -> 617
    assert fee_cents(gross, Decimal("0.05")) == fee


def test_round_cents_is_half_away_from_zero():
    assert round_cents(Decimal("2.5")) == 3
    assert round_cents(Decimal("-2.5")) == -3
    assert round_cents(Decimal("2.4999")) == 2


def test_allocation_sums_exactly_and_follows_weights():
    parts = allocate(100, [1, 1, 1])
    assert sum(parts) == 100 and parts == [34, 33, 33]
    assert allocate(17, [1000, 3000, 1000]) == [4, 10, 3]  # 3.4, 10.2, 3.4: the spare cent to the first tie
    assert sum(allocate(9999, [7, 13, 1, 0, 500])) == 9999


def test_fractional_units_are_priced_to_the_cent():
    assert units_amount_cents(Decimal("1.5"), 2747) == 4121  # 41.205 -> 41.21
    assert to_hundredths(Decimal("2.25")) == 225
    with pytest.raises(ValueError):
        to_hundredths(Decimal("1.005"))
    assert euros(9500) == "95.00" and euros(-5) == "-0.05"


def test_personal_identity_codes_are_recognised_anywhere_in_a_text():
    assert contains_personal_identity_code("131052-308T")
    assert contains_personal_identity_code("client 131052-308T here")
    assert not contains_personal_identity_code("131052-308A")  # wrong check character
    assert not contains_personal_identity_code("C-000123")
    assert contains_personal_identity_code("ref:131052-308T;x")
    assert contains_personal_identity_code("ref 131052 \u2013 308t x")  # en dash, spaces, lower case
    assert contains_personal_identity_code("\uff11\uff13\uff11\uff10\uff15\uff12-308T")  # full-width digits


def test_a_code_glued_inside_a_longer_token_is_a_code_and_the_system_s_own_ids_never_are():
    # a code with its century sign is found even glued to letters or digits; the ids the system makes
    # are drawn again when they would carry one (seteli_shared.ids; shared/tests/test_privacy.py)
    assert contains_personal_identity_code("x131052-308T")
    assert contains_personal_identity_code("131052-308Tx")
    from seteli_shared.ids import new_id
    assert not any(contains_personal_identity_code(new_id()) for _ in range(50_000))


def test_consumers_ignore_unknown_fields_in_envelope_and_data():
    env = Envelope.wrap(VoucherProviderChosen(voucher_id="v", funder_id="091", provider_id="p", category="home_care",
                                              chosen_at="2026-01-01T00:00:00Z"), "vouchers")
    raw = env.model_dump(mode="json")
    raw["someextension"] = "x"
    raw["data"]["added_in_a_later_version"] = 1
    again = Envelope.model_validate(raw)
    assert again.event() == env.event()
    assert again.type == "fi.seteli.voucher.provider_chosen.v1" and again.routing_key == "voucher.provider_chosen.v1"
