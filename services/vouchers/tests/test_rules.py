"""The voucher rules alone: no database, no clock of their own."""
from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from seteli_shared.auth import Principal, Role
from seteli_shared.codes import new_code
from seteli_shared.errors import DomainError
from vouchers.domain import (Audience, ThrottleLimits, audience_of, check_choosable, check_validity,
                             hash_login_code, login_code_matches, retry_after)
from vouchers.schemas import VoucherCreate

TODAY = date(2026, 11, 25)


def body(**over) -> dict:  # noqa: ANN003
    return {"decision_ref": "HKI-2026-1", "client_ref": "asiakas-1", "category": "home_care",
            "units_per_period": "20", "value_per_unit_cents": 2500,
            "valid_from": TODAY.isoformat(), "valid_until": (TODAY + timedelta(days=300)).isoformat(), **over}


def errors(**over) -> list[dict]:  # noqa: ANN003
    with pytest.raises(ValidationError) as e:
        VoucherCreate(**body(**over))
    return e.value.errors()


def test_personal_identity_code_as_client_reference_is_refused_without_echoing_it():
    [err] = errors(client_ref="131052-308T")
    assert (err["type"], err["loc"]) == ("personal_identity_code", ("client_ref",))
    assert "131052" not in err["msg"]


def test_pseudonymous_references_are_stripped_and_accepted():
    v = VoucherCreate(**body(client_ref="  HKI-asiakas-00042 ", decision_ref="\tHKI-2026-1\n"))
    assert (v.client_ref, v.decision_ref) == ("HKI-asiakas-00042", "HKI-2026-1")


def test_every_field_error_of_a_request_comes_at_once():
    found = {(e["loc"][0], e["type"]) for e in errors(client_ref="   ", decision_ref="a b", category="nope",
                                                      value_per_unit_cents=0, surprise=1)}
    assert found == {("client_ref", "string_too_short"), ("decision_ref", "invalid_reference"),
                     ("category", "unknown_category"), ("value_per_unit_cents", "greater_than"),
                     ("surprise", "extra_forbidden")}


@pytest.mark.parametrize("valid_from, valid_until, message", [
    (date(1900, 1, 1), date(1900, 12, 31), "valid_until is in the past"),
    (TODAY, TODAY - timedelta(days=1), "valid_until is before valid_from"),
    (TODAY - timedelta(days=400), TODAY + timedelta(days=30), "more than a year in the past"),
    (TODAY + timedelta(days=400), TODAY + timedelta(days=500), "more than a year ahead"),
    (TODAY, date(2031, 11, 26), "at most 5 years"),
])
def test_validity_is_refused(valid_from, valid_until, message):  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        check_validity(valid_from, valid_until, TODAY)
    assert e.value.reason == "invalid_validity" and message in e.value.message


@pytest.mark.parametrize("valid_from, valid_until", [
    (TODAY, TODAY),  # one day
    (TODAY - timedelta(days=365), TODAY),  # backdated a year, ends today
    (TODAY, date(2031, 11, 25)),  # five years to the day
    (date(2028, 2, 29), date(2033, 2, 28)),  # five years from a leap day
])
def test_validity_is_accepted(valid_from, valid_until):  # noqa: ANN001
    check_validity(valid_from, valid_until, TODAY if valid_from.year < 2028 else date(2027, 3, 1))


def test_an_expired_voucher_cannot_get_a_provider():
    with pytest.raises(DomainError) as e:
        check_choosable("issued", date(2026, 1, 31), today=date(2026, 2, 1))
    assert e.value.reason == "voucher_expired"


def test_each_role_has_its_audience():
    assert audience_of(Principal("o", frozenset({Role.OPERATOR}))) is Audience.FUNDER
    assert audience_of(Principal("f", frozenset({Role.FUNDER_REPORTING}), funder_id="091")) is Audience.FUNDER
    assert audience_of(Principal("p", frozenset({Role.PROVIDER_CHARGER}), provider_id="p")) is Audience.PROVIDER
    assert audience_of(Principal("c", frozenset({Role.CLIENT}), voucher_id="v")) is Audience.CLIENT


def test_login_code_is_kept_only_as_a_salted_hash():
    code, salt = new_code(12), "ab" * 16
    stored = hash_login_code(code, salt)
    assert code not in stored and len(stored) == 64
    assert stored != hash_login_code(code, "cd" * 16), "each voucher its own salt"
    assert login_code_matches(code, salt, stored)
    assert not login_code_matches(new_code(12), salt, stored)
    assert not login_code_matches(None, salt, stored) and not login_code_matches(code, None, None)


LIMITS = ThrottleLimits(per_voucher=5, per_source=20, window=timedelta(minutes=15))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def ago(**kw) -> datetime:  # noqa: ANN003
    return NOW - timedelta(**kw)


def test_throttle_lets_four_failures_pass_and_blocks_at_five_until_the_oldest_leaves_the_window():
    four = [ago(minutes=m) for m in (10, 8, 6, 4)]
    assert retry_after(four, four, NOW, LIMITS) is None
    five = four + [ago(minutes=1)]
    assert retry_after(five, five, NOW, LIMITS) == 5 * 60  # the one 10 minutes ago leaves in 5
    assert retry_after(five, [], NOW + timedelta(minutes=5), LIMITS) is None


def test_throttle_ignores_failures_older_than_the_window():
    assert retry_after([ago(minutes=15)] * 10, [ago(minutes=16)] * 30, NOW, LIMITS) is None


def test_throttle_per_source_and_the_longer_wait_wins():
    source = [ago(minutes=14)] * 10 + [ago(minutes=2)] * 10
    assert retry_after([], source, NOW, LIMITS) == 60
    assert retry_after([ago(minutes=3)] * 5, source, NOW, LIMITS) == 12 * 60
