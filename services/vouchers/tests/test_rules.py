from datetime import date

import pytest

from seteli_shared.errors import DomainError
from vouchers.domain import check_choosable, check_reference, check_voucher_terms


def test_personal_identity_code_as_client_reference_is_refused_without_echoing_it():
    with pytest.raises(DomainError) as e:
        check_reference("client_ref", "131052-308T")
    assert e.value.reason == "personal_identity_code_refused"
    assert "131052" not in str(e.value.body())


def test_pseudonymous_reference_is_accepted():
    assert check_reference("client_ref", "HKI-asiakas-00042") == "HKI-asiakas-00042"


def test_terms_are_checked():
    with pytest.raises(DomainError) as e:
        check_voucher_terms("home_care", date(2026, 2, 1), date(2026, 1, 1))
    assert e.value.reason == "invalid_validity"
    with pytest.raises(DomainError) as e:
        check_voucher_terms("nope", date(2026, 1, 1), date(2026, 2, 1))
    assert e.value.reason == "unknown_category"


def test_an_expired_voucher_cannot_get_a_provider():
    with pytest.raises(DomainError) as e:
        check_choosable("issued", date(2026, 1, 31), today=date(2026, 2, 1))
    assert e.value.reason == "voucher_expired"
