"""The identity-code guard (``seteli_shared.privacy``) and the id factory (``seteli_shared.ids``), by property:
hypothesis writes valid personal identity codes (any date of 1800-2099 with one of its century's signs, the
2023 ones included, any individual number, the right check character) in every way people and programs
write them, and the guard must find each; near-misses (a wrong check character, a date that does not exist,
a window inside a longer run of digits) must pass; the fast paths must never skip what the slow path finds;
and nothing the system generates may ever be flagged."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import string
from datetime import date

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from seteli_shared import ids
from seteli_shared.codes import new_code
from seteli_shared.privacy import (CENTURY, CHECK_CHARACTERS, SIX_DIGITS_SPREAD, cannot_hold_code,
                                   contains_personal_identity_code, find_in, normalise)

SIGNS = {1800: "+", 1900: "-YXWVU", 2000: "ABCDEF"}
DASHES = ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\ufe63", "\uff0d", "\u00ad"]
SPACES = [" ", "\u00a0", "\u202f", "\u2009", "\u3000", "\t", "\n"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e"]
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_character(ddmmyy: str, number: str) -> str:
    return CHECK_CHARACTERS[int(ddmmyy + number) % 31]


@st.composite
def codes(draw) -> tuple[str, str, str, str]:  # noqa: ANN001
    """(DDMMYY, century sign, NNN, check character) of a valid code."""
    born = draw(st.dates(min_value=date(1800, 1, 1), max_value=date(2099, 12, 31)))
    sign = draw(st.sampled_from(SIGNS[born.year // 100 * 100]))
    ddmmyy = born.strftime("%d%m") + f"{born.year % 100:02d}"
    number = f"{draw(st.integers(2, 999)):03d}"
    return ddmmyy, sign, number, check_character(ddmmyy, number)


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) - ord("0") + 0xFF10) if c.isdigit() else
                   chr(ord(c.upper()) - ord("A") + 0xFF21) if c.isascii() and c.isalpha() else c for c in text)


def _between(draw, text: str) -> str:  # noqa: ANN001
    """``text`` with invisible characters (and, where ``spaced``, spaces) strewn between its characters."""
    out = []
    for c in text:
        out.append(c)
        out.append(draw(st.sampled_from(["", "", "", *INVISIBLE])))
    return "".join(out)


@st.composite
def written_with_sign(draw) -> str:  # noqa: ANN001
    """A valid code with its century sign, written in any way: dash variants, spaces or invisible characters
    around the parts, lower case, full-width digits, glued to letters or digits, inside longer text."""
    ddmmyy, sign, number, check = draw(codes())
    if sign == "-":
        sign = draw(st.sampled_from(DASHES))
    around = st.sampled_from(["", "", *SPACES, *INVISIBLE])
    text = ddmmyy + draw(around) + sign + draw(around) + number + check
    if draw(st.booleans()):
        text = text.lower()
    if draw(st.booleans()):
        text = _full_width(text)
    if draw(st.booleans()):
        text = _between(draw, text)
    glue = st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=12)
    prose = st.text(max_size=30)
    return draw(st.one_of(glue, prose)) + text + draw(st.one_of(glue, prose))


@st.composite
def written_without_sign(draw) -> str:  # noqa: ANN001
    """A valid code without its century sign standing as a token: not after a digit, not before a letter or
    digit; spaces, invisible characters, ``_``, ``.`` or ``/`` between date and number; lower case,
    full-width; a letter may come before it (``HETU131052308T``)."""
    ddmmyy, _sign, number, check = draw(codes())
    gap = draw(st.sampled_from(["", "", " ", "\u00a0", "_", ".", "/", " / ", "\u200b", "\u00a0\u200b"]))
    text = ddmmyy + gap + number + check
    if draw(st.booleans()):
        text = text.lower()
    if draw(st.booleans()):
        text = _full_width(text)
    before = draw(st.one_of(st.just(""), st.text(alphabet=string.ascii_letters + " :;,(-", max_size=10),
                            st.text(max_size=10).map(lambda t: t + " ")))
    after = draw(st.one_of(st.just(""), st.text(alphabet=" .,;:)-!?\n", max_size=5),
                           st.text(max_size=10).map(lambda t: " " + t)))
    return before + text + after


@PROPERTY
@given(written_with_sign())
@example("x131052-308Ty")
@example("131052 - 308T")
@example("131052\u00a0-\u00a0308T")
@example("010101a123n")
def test_a_code_with_its_century_sign_is_found_however_it_is_written(text: str):
    assert contains_personal_identity_code(text), ascii(text)
    assert find_in({"deep": [{"x": text}]})[0] == ("deep", 0, "x")  # (a NUL in the text is named first)


@PROPERTY
@given(written_without_sign())
@example("131052308T")
@example("131052 308T")
@example("131052\u00a0308T")
@example("HETU131052308T")
@example("131052_308t.")
def test_a_code_without_its_century_sign_is_found_standing_as_a_token(text: str):
    assert contains_personal_identity_code(text), ascii(text)


@PROPERTY
@given(codes(), st.sampled_from(CHECK_CHARACTERS), st.booleans())
def test_a_wrong_check_character_is_no_code(code, wrong: str, with_sign: bool):  # noqa: ANN001
    ddmmyy, sign, number, check = code
    assume(wrong != check)
    assert not contains_personal_identity_code(ddmmyy + (sign if with_sign else "") + number + wrong)


@PROPERTY
@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 999),
       st.sampled_from(sorted(CENTURY)))
def test_a_date_that_does_not_exist_is_no_code(day: int, month: int, yy: int, n: int, sign: str):
    def exists(century: int) -> bool:
        try:
            date(century + yy, month, day)
            return True
        except ValueError:
            return False

    ddmmyy, number = f"{day:02d}{month:02d}{yy:02d}", f"{n:03d}"
    check = check_character(ddmmyy, number)
    if not exists(CENTURY[sign]):
        assert not contains_personal_identity_code(ddmmyy + sign + number + check)
    if not any(exists(c) for c in (1800, 1900, 2000)):
        assert not contains_personal_identity_code(ddmmyy + number + check)


@PROPERTY
@given(codes(), st.text(alphabet=string.digits, min_size=1, max_size=8), st.text(alphabet=string.digits, max_size=8),
       st.sampled_from(["", "FI", "+358", "tili ", "IBAN FI21 "]))
def test_a_window_inside_a_longer_run_of_digits_is_no_code(code, before: str, after: str, lead: str):  # noqa: ANN001
    ddmmyy, _sign, number, check = code
    assume(check.isdigit())  # a run of digits: IBANs, phone numbers, account and order numbers
    assert not contains_personal_identity_code(lead + before + ddmmyy + number + check + after)
    assert not contains_personal_identity_code(lead + ddmmyy + number + check + before)


def test_the_issue_s_examples():
    for text in ("131052 308T", "131052\u00a0308T", "x131052-308Ty", "131052308T", "010101A123N", "010101Y123N",
                 "131052\u2010308t", "\uff11\uff13\uff11\uff10\uff15\uff12-308T", "HETU131052308T",
                 "\u0661\u0663\u0661\u0660\u0665\u0662-308T",  # Arabic-Indic digits
                 "\u2460\u2462\u2460\u24ea\u2464\u2461-\u2462\u24ea\u2467T"):  # circled digits (NFKC makes them ASCII)
        assert contains_personal_identity_code(text), ascii(text)
    valid_hex = next(f"ab{d}-{n}{check_character(d, n)}-" for d in ("131052", "010203", "311299")
                     for n in ("308", "123", "456", "789") if check_character(d, n) in "0123456789ABCDEF")
    assert contains_personal_identity_code(valid_hex)  # glued into a UUID-like text
    for text in ("FI2112345600000785", "+358401234567", "2617416-4", "131052-308A", "1131052308T", "131052308TX",
                 "131052308T5", "HKI-1", "2026-11-25", "visit-0001", "27,50", "2026-01-13T10:52:30.131052+00:00"):
        assert not contains_personal_identity_code(text), text


def test_normalising_folds_every_spelling_into_one():
    assert normalise("a\u2013b\u00a0c\u200bd\uff11") == "A-B CD1"
    assert normalise("\u0661\u00ad\u2212+") == "1--+"


ASCII_NEAR_CODES = st.text(alphabet="0123456789-+AaTtNnYy \t\n\r\x0b\x0c\x00\x1f\x7f._/x\\", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(ASCII_NEAR_CODES, st.text(max_size=40), written_with_sign(), written_without_sign()))
def test_the_fast_paths_never_skip_a_code_the_slow_path_finds(text: str):
    """``cannot_hold_code`` (CSV lines) and the guard's byte scan (bodies) skip the matcher only for text the
    matcher would pass."""
    found = contains_personal_identity_code(text)
    if cannot_hold_code(text):
        assert not found, ascii(text)
    body = text.encode()
    if body.isascii() and b"\x00" not in body and b"\\" not in body and not re.search(SIX_DIGITS_SPREAD, body):
        assert not found, ascii(text)


# ------------------------------------------------------------------ what the system generates
def test_ids_codes_secrets_and_digests_are_never_flagged():
    """Drawn in numbers where the raw forms trip the guard many times over (a raw UUID about once in 27,000,
    a SHA-256 hex digest once in 2,800), none of the factory's does."""
    assert not any(contains_personal_identity_code(ids.new_id()) for _ in range(200_000))
    assert not any(contains_personal_identity_code(new_code()) for _ in range(20_000))
    assert not any(contains_personal_identity_code(new_code(8)) for _ in range(20_000))
    assert not any(contains_personal_identity_code(ids.new_hex()) for _ in range(20_000))
    assert not any(contains_personal_identity_code(ids.new_secret(32, "whsec_")) for _ in range(20_000))
    assert not any(contains_personal_identity_code(ids.digest_text(hashlib.sha256(str(i).encode())))
                   for i in range(20_000))
    raw_digests = sum(contains_personal_identity_code(hashlib.sha256(str(i).encode()).hexdigest())
                      for i in range(20_000))
    assert raw_digests > 0, "the raw digests trip the guard (so the test above can fail)"


def test_a_flagged_draw_is_drawn_again_and_derived_texts_count():
    draws = iter(["131052-308T", "x-0b1c-ab131052-308T", "clean-1", "clean-2"])
    assert ids.clean(lambda: next(draws)) == "clean-1"
    draws = iter(["a", "b"])
    assert ids.clean(lambda: next(draws), derived=lambda v: "131052-308T" if v == "a" else "ok") == "b"
    with pytest.raises(RuntimeError):
        ids.clean(lambda: "131052-308T")


def test_a_digest_is_derived_again_only_when_flagged_and_stays_deterministic():
    flagged = next(i for i in range(100_000)
                   if contains_personal_identity_code(hashlib.sha256(str(i).encode()).hexdigest()))
    first = ids.digest_text(hashlib.sha256(str(flagged).encode()))
    assert first == ids.digest_text(hashlib.sha256(str(flagged).encode()))
    assert first != hashlib.sha256(str(flagged).encode()).hexdigest() and not contains_personal_identity_code(first)
    assert ids.digest_text(hashlib.sha256(b"x")) == hashlib.sha256(b"x").hexdigest()


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(st.integers(), st.text(max_size=40), st.booleans(), st.just("131052-308T 010101A123N")),
                max_size=6))
def test_cursors_never_hold_six_digits_in_a_row_so_are_never_flagged(key: list):
    cursor = ids.cursor_text(json.dumps(key))
    assert not re.search("[0-9]{6}", cursor) and not contains_personal_identity_code(cursor)
    assert json.loads(base64.urlsafe_b64decode(cursor)) == key


def test_the_logger_drops_every_value_the_guard_s_matcher_flags(capsys):  # noqa: ANN001
    """Nested values, keys, numbers and tracebacks too: the same matcher as the request guard's."""
    from seteli_shared.logging import REMOVED, configure_logging, get_logger

    configure_logging("privacy-test")
    log = get_logger("privacy-test")
    capsys.readouterr()
    number = next(int(f"131052{n:03d}{CHECK_CHARACTERS[int(f'131052{n:03d}') % 31]}") for n in range(1000)
                  if CHECK_CHARACTERS[int(f"131052{n:03d}") % 31].isdigit())
    try:
        raise ValueError("Key (ref)=(asiakas 131052 308T) already exists")
    except ValueError:
        log.exception("test.logged", nested={"refs": ["ok", "x131052-308Ty"]}, number=number, plain="visit-1",
                      **{"HETU131052308T": 1})
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["nested"] == {"refs": ["ok", REMOVED]} and line["number"] == REMOVED and line["plain"] == "visit-1"
    assert line["exception"] == REMOVED and REMOVED in line and "HETU131052308T" not in line
    assert "131052" not in json.dumps(line)


_LOGGED = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.sampled_from(["visit-1", "131052-308T", "x131052-308Ty", "131052308", "/charges", "POST"]),
                    st.integers(131052000, 131052999), st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["event", "path", "ms", "HETU131052308T", "k131052-308T", "status"]) |
                       st.text(max_size=12),
                       _LOGGED | st.lists(_LOGGED, max_size=3) | st.dictionaries(st.text(max_size=5), _LOGGED,
                                                                                 max_size=3), max_size=8))
def test_the_logger_s_inline_checks_drop_what_the_plain_walk_drops(event: dict) -> None:
    """``_drop_personal_data`` checks strings and numbers inline (the common cases of every line): the same line as
    the plain walk of every key and value (``_scrubbed``) makes, key for key, whatever the values."""
    from seteli_shared.logging import REMOVED, _drop_personal_data, _flagged, _scrubbed

    plain = {(REMOVED if _flagged(k) else k): _scrubbed(v) for k, v in event.items()}
    made = _drop_personal_data(None, "info", dict(event))
    assert made == plain and list(made) == list(plain)
    assert [type(v) for v in made.values()] == [type(v) for v in plain.values()]
