"""The voucher rules alone: no database, no clock of their own."""
from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from seteli_shared.auth import Principal, Role
from seteli_shared.codes import new_code
from seteli_shared.errors import DomainError
from vouchers.domain import (Audience, Failures, LoginThrottle, ThrottleKeys, audience_of, check_choosable,
                             check_validity, delay_after, hash_login_code, login_code_matches, login_wait)
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


THROTTLE = LoginThrottle(free_per_voucher_address=5, free_per_address=20, voucher_alarm=50,
                         first_delay=timedelta(seconds=2), longest_delay=timedelta(minutes=15),
                         memory=timedelta(hours=24))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
NONE = Failures()


def ago(**kw) -> datetime:  # noqa: ANN003
    return NOW - timedelta(**kw)


def test_the_wait_doubles_after_the_free_failures_up_to_the_longest():
    assert [delay_after(n, 5, THROTTLE).total_seconds() for n in range(4, 17)] == [
        0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]
    assert delay_after(10 ** 6, 5, THROTTLE) == timedelta(minutes=15), "no overflow however many"


def test_an_address_waits_only_for_its_own_failures():
    assert login_wait(Failures(4, NOW), NONE, NONE, NOW, THROTTLE) is None
    assert login_wait(Failures(5, NOW), NONE, NONE, NOW, THROTTLE) == 2
    assert login_wait(Failures(5, ago(seconds=1)), NONE, NONE, NOW, THROTTLE) == 1
    assert login_wait(Failures(5, ago(seconds=2)), NONE, NONE, NOW, THROTTLE) is None
    assert login_wait(NONE, Failures(20, NOW), NONE, NOW, THROTTLE) == 2
    # the longer wait wins
    assert login_wait(Failures(8, NOW), Failures(21, NOW), NONE, NOW, THROTTLE) == 16
    # the voucher's failures from everywhere never make a fresh address wait ...
    assert login_wait(NONE, NONE, Failures(10 ** 6, NOW), NOW, THROTTLE) is None
    # ... past the alarm, an address waits from its own first failure for that voucher
    assert login_wait(Failures(1, NOW), NONE, Failures(49, NOW), NOW, THROTTLE) is None
    assert login_wait(Failures(1, NOW), NONE, Failures(50, NOW), NOW, THROTTLE) == 2


def test_failures_are_forgotten_a_day_after_the_last_one():
    assert login_wait(Failures(30, ago(hours=24)), Failures(30, ago(hours=24)), NONE, NOW, THROTTLE) is None
    assert login_wait(Failures(30, ago(hours=23)), NONE, NONE, NOW, THROTTLE) is None  # 15 minutes long over
    assert login_wait(Failures(1, NOW), NONE, Failures(50, ago(hours=24)), NOW, THROTTLE) is None


def test_throttle_keys_are_keyed_hashes_that_tell_codes_and_addresses_apart():
    a = ThrottleKeys.of("7KQ2M9XH4D=", "192.0.2.1", b"secret")
    assert a == ThrottleKeys.of("7KQ2M9XH4D=", "192.0.2.1", b"secret")
    assert len({a.voucher_address, a.address, a.voucher}) == 3
    assert "192.0.2.1" not in str(a) and "7KQ2M9XH4D" not in str(a)
    assert a.voucher_address != ThrottleKeys.of("7KQ2M9XH4D=", "192.0.2.2", b"secret").voucher_address
    assert a.address == ThrottleKeys.of("ANOTHERCODE", "192.0.2.1", b"secret").address
    assert a.voucher != ThrottleKeys.of("7KQ2M9XH4D=", "192.0.2.1", b"another secret").voucher
