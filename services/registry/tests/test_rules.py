import pytest

from registry.domain import known_category, valid_business_id, valid_iban
from seteli_shared.errors import DomainError


def test_valid_business_id_is_normalised():
    assert valid_business_id("2617416-4") == "2617416-4"
    assert valid_business_id(" 26174164 ") == "2617416-4"


@pytest.mark.parametrize("bad", ["2617416-5", "1234567", "abc", ""])
def test_business_id_with_wrong_check_digit_or_form_is_refused(bad):
    with pytest.raises(DomainError) as e:
        valid_business_id(bad)
    assert e.value.reason == "invalid_business_id"


def test_iban_is_checked():
    assert valid_iban("FI21 1234 5600 0007 85") == "FI2112345600000785"
    with pytest.raises(DomainError) as e:
        valid_iban("FI2112345600000786")
    assert e.value.reason == "invalid_iban"


def test_unknown_category_is_refused():
    assert known_category("home_care") == "home_care"
    with pytest.raises(DomainError) as e:
        known_category("astrology")
    assert e.value.reason == "unknown_category"
