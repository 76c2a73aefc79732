"""Voucher and login codes as people read them: only Crockford's 32 readable symbols, shown in groups of
four, read back whatever the case, spacing, dashes or look-alike letters, old codes (with a check symbol
such as ``=``) still accepted, and never taken for a personal identity code, compact or grouped."""
from __future__ import annotations

from seteli_shared.codes import ALPHABET, CHECK, grouped, new_code, normalise
from seteli_shared.privacy import contains_personal_identity_code


def test_new_codes_use_only_the_readable_symbols_check_included():
    for length in (10, 12):
        made = [new_code(length) for _ in range(3000)]
        assert all(set(c) <= set(ALPHABET) and len(c) == length + 1 for c in made)
        assert all(normalise(c) == c for c in made)
    assert not set(ALPHABET) & set("ILOU")


def test_codes_are_shown_in_groups_of_four():
    assert grouped("7RH8ZB3RZ5K") == "7RH8-ZB3R-Z5K"
    assert grouped("32TQW6H8H8WE9") == "32TQ-W6H8-H8WE9"  # no lone symbol at the end
    assert grouped("ABCDEFGH") == "ABCD-EFGH"


def test_a_code_is_read_back_however_a_person_writes_it():
    code = new_code()
    shown = grouped(code)
    for typed in (shown, shown.lower(), shown.replace("-", " "), shown.replace("-", "\u2013"),
                  f"  {shown.replace('-', chr(0xa0))} ", shown.replace("0", "o").replace("1", "l")):
        assert normalise(typed) == code, typed
    assert normalise(code[:-1] + ("0" if code[-1] != "0" else "1")) is None  # a wrong check symbol
    assert normalise("") is None


def test_codes_made_before_with_a_symbol_that_cannot_be_read_aloud_are_still_accepted():
    # bodies whose mod 37 check is one of * ~ $ = U, as codes were made before
    from seteli_shared.codes import _check_symbol

    old = next(b + _check_symbol(b) for b in (f"7RH8ZB3R{a}{b}" for a in ALPHABET for b in ALPHABET)
               if _check_symbol(b) not in ALPHABET)
    assert old[-1] in "*~$=U"
    assert normalise(old) == old and normalise(grouped(old).lower()) == old


def test_the_privacy_guard_never_flags_a_code_compact_or_grouped():
    for length in (10, 12):
        for _ in range(20_000):
            code = new_code(length)
            assert not contains_personal_identity_code(code)
            assert not contains_personal_identity_code(grouped(code))


def test_the_check_symbol_is_the_mod_37_check_of_the_body_read_in_base_32():
    from seteli_shared.codes import _check_symbol

    for body in ("0", "Z", "7RH8ZB3RZ5", "ZZZZZZZZZZZZ", "0000000001"):
        value = 0
        for c in body:
            value = value * 32 + ALPHABET.index(c)
        assert _check_symbol(body) == CHECK[value % 37]
