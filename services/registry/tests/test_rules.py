from decimal import Decimal

import pytest
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from registry import domain
from registry.api import ApprovalCreate, FunderCreate, ProviderCreate
from registry.domain import known_category, valid_business_id, valid_iban


def refusal(rule, value) -> str:  # noqa: ANN001
    with pytest.raises(PydanticCustomError) as e:
        rule(value)
    assert len(str(value)) < 4 or str(value) not in e.value.message(), "a refusal never repeats the input"
    return e.value.type


def reasons(model, **body) -> dict[str, str]:  # noqa: ANN001, ANN003
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    return {".".join(map(str, err["loc"])): err["type"] for err in e.value.errors()}


def test_valid_business_id_is_normalised():
    assert valid_business_id("2617416-4") == "2617416-4"
    assert valid_business_id(" 26174164 ") == "2617416-4"


@pytest.mark.parametrize("bad", ["2617416-5", "1234567", "abc", ""])
def test_business_id_with_wrong_check_digit_or_form_is_refused(bad):
    assert refusal(valid_business_id, bad) == "invalid_business_id"


def test_iban_is_checked():
    assert valid_iban("FI21 1234 5600 0007 85") == "FI2112345600000785"
    assert refusal(valid_iban, "FI2112345600000786") == "invalid_iban"


def test_unknown_category_is_refused():
    assert known_category("home_care") == "home_care"
    assert refusal(known_category, "astrology") == "unknown_category"


def test_fee_rate_is_a_fraction_below_one_in_its_shortest_form():
    assert domain.valid_fee_rate(Decimal("0.050")) == Decimal("0.05")
    assert domain.fee_rate_text(Decimal("0.0500")) == "0.05"
    assert domain.fee_rate_text(Decimal("0.00")) == "0"
    assert domain.fee_rate_text(Decimal("0.1250")) == "0.125"
    for bad in ("1", "1.5", "-0.01", "NaN"):
        assert refusal(domain.valid_fee_rate, Decimal(bad)) == "invalid_fee_rate"


def test_a_second_registration_of_a_funder_is_a_retry_only_with_the_same_terms():
    first = domain.FunderTerms("091", "Helsinki", "municipality", "0.05", 14, None)
    assert domain.registration_conflicts(first, first) == []
    other = domain.FunderTerms("091", "Helsinki", "municipality", "0.04", 14, "x@hel.fi")
    assert domain.registration_conflicts(first, other) == ["operator_fee_rate", "contact_email"]


def test_funder_request_defaults_to_the_seed_terms_and_retries_compare_equal():
    body = FunderCreate.model_validate({"funder_id": "091", "name": " Helsinki ", "kind": "municipality"})
    assert body.terms() == domain.FunderTerms("091", "Helsinki", "municipality", "0.05", 14, None)
    same = FunderCreate.model_validate({"funder_id": "091", "name": "Helsinki", "kind": "municipality",
                                        "operator_fee_rate": 0.05, "settlement_days": 14})
    assert same.terms() == body.terms()


def test_every_refused_field_of_a_request_is_reported_together():
    assert reasons(ProviderCreate, business_id="2617416-5", name="   ", iban="nope", extra=1) == {
        "business_id": "invalid_business_id", "name": "string_too_short", "iban": "invalid_iban",
        "extra": "extra_forbidden"}
    assert reasons(FunderCreate, funder_id="Helsinki!", name="", kind="city", operator_fee_rate="0.55555",
                   settlement_days=400, contact_email="nobody") == {
        "funder_id": "string_pattern_mismatch", "name": "string_too_short", "kind": "enum",
        "operator_fee_rate": "invalid_number", "settlement_days": "less_than_equal",
        "contact_email": "invalid_email"}
    assert reasons(ApprovalCreate, category="astrology") == {"category": "unknown_category"}
