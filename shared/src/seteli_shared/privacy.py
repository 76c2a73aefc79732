"""The privacy guard: the operator knows clients only by pseudonymous references, so a Finnish
personal identity code (henkilötunnus, HETU: ``DDMMYY`` + century sign + ``NNN`` + check character)
must never enter any service.

It is recognised the way people and programs really write it. The text is first **normalised**
(``normalise``): Unicode NFKC (full-width and other compatibility digits become ASCII digits, and so do
the decimal digits of every other script), every dash variant becomes ``-``, every space variant
becomes one ASCII space, zero-width, format, control and combining characters vanish, and letters are
upper-cased. Then two rules look for a code; either is enough:

1. **With a century sign** (``+`` 1800s; ``-`` and ``Y X W V U`` 1900s; ``A B C D E F`` 2000s, the signs
   of the 2023 reform included), spaces removed too: anywhere, even glued to letters or digits on either
   side (``x131052-308Ty``, ``ab131052-308a-...``). A sign between six digits and three is too specific
   to be anything else than a code someone wrote.
2. **Without a century sign**: the ten characters ``DDMMYYNNNC`` contiguous, or with only spaces, ``_``,
   ``.`` or ``/`` between the date and the individual number (``131052308T``, ``131052 308T``,
   ``HETU131052308T``), when they stand as a token: not preceded by a digit and not followed by a letter
   or digit. A window inside a longer run of digits (an IBAN, ``+358401234567``) is no code.

A candidate counts only when its date exists (without a sign, in any of the three centuries: 29
February) and its check character is right, so ordinary references that merely look similar pass.

**False positives**, measured on 10,000,000 random values of each kind (``bench/privacy_guard.py``): a
random version 4 UUID is flagged 374 times (once in 26,738: hex digits are digits and ``A``-``F`` are
century signs, and a last group ending in ten digits after a letter is a token), a SHA-256 hex digest
3,527 times (once in 2,835); voucher and client login codes (Crockford base32 with a check symbol),
Finnish IBANs (compact or in groups of four), business ids and mobile numbers written with spaces or as
``+358...`` never; a ten-digit number standing alone 11,694 times (once in 855), and national mobile
numbers written without spaces (``0401234567``) 113,046 times (once in 88): they are exactly a code's
shape without its sign. That is why everything the system itself generates and later receives back
comes from ``seteli_shared.ids``, which draws again when a value would be flagged.

Fast paths: ``cannot_hold_code`` (and the request guard's byte scan with ``SIX_DIGITS_SPREAD``) prove a
text clean without normalising it: both rules need six digits in a row once spaces and invisible
characters are gone, and in ASCII text those can only be six ASCII digits with ASCII spaces or control
characters between them (a property test checks the fast paths never skip a code the slow path finds).

``find_in(value)`` walks any JSON-like value (nested objects and lists; keys too) and names the first
offending place; the HTTP layer (``web.py``) runs it over every request, the consumer over every
message and the logger over every line. Nothing here ever echoes the code itself.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from datetime import date
from typing import Any, Iterator

#: the reason of every refusal (HTTP 422, a CSV line, a decision's reply, a dead letter)
REASON = "personal_identity_code"
CHECK_CHARACTERS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURY = {"+": 1800, "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
           "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}
_CENTURIES = (1900, 2000, 1800)

# rule 1, in the text without spaces: DDMMYY, century sign, NNN, check character (at every position)
_WITH_SIGN = re.compile(r"(?=([0-9]{6})([-+A-FU-Y])([0-9]{3})([0-9A-Y]))")
# rule 2, in the text with its spaces: a token DDMMYY, spaces and at most one of ``_./``, NNN, C (not after a
# digit, not before a letter or digit; ``[^\W_]`` is a letter or digit of any script)
_WITHOUT_SIGN = re.compile(r"(?<![0-9])(?=([0-9]{6}) *[_./]? *([0-9]{3})([0-9A-Y])(?![^\W_]))")
#: what each rule needs at least, searched before its candidates are walked one by one (most text has none)
_WITH_SIGN_SHAPE = re.compile(r"[0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-Y]")
_WITHOUT_SIGN_SHAPE = re.compile(r"[0-9]{6} *[_./]? *[0-9]{4}|[0-9]{6} *[_./]? *[0-9]{3}[A-Y]")
_ASCII_INVISIBLE = re.compile(r"[\x00-\x1f\x7f]")
#: six ASCII digits with nothing but ASCII spaces or control characters between them (``normalise`` drops
#: those): ASCII text without one (and without a backslash, i.e. JSON escapes) cannot hold a personal
#: identity code. As bytes for bodies (``web``), as text for lines (``cannot_hold_code``).
SIX_DIGITS_SPREAD = rb"[0-9](?:[\x00-\x20\x7f]*[0-9]){5}"
_SIX_DIGITS_SPREAD_TEXT = re.compile(SIX_DIGITS_SPREAD.decode("ascii"))
#: characters that are dashes without being Unicode's ``Pd`` (minus signs, the soft hyphen, hyphen bullet)
_DASHES = "\u2212\u00ad\u2043\u02d7\u2796\ufe63\uff0d"
_PLUSES = "\u2795\ufb29"


#: ASCII spaces and control characters: ``normalise`` drops them or makes them spaces (rule 1 then drops those)
_QUIET = bytes(range(0x21)) + b"\x7f"
#: each ASCII byte's part in a code: a digit ``0``; a separator that can only be a century sign or rule 2's
#: ``_./``: ``s``; a letter that can be a century sign or a check character (either case: ``normalise`` upper-
#: cases): ``L``; a letter that can only be a check character: ``c``; anything else ``x``
_PARTS = bytes(ord("0") if chr(i).isdigit() else ord("s") if chr(i) in "-+_./" else
               ord("L") if chr(i).upper() in "ABCDEFUVWXY" else ord("c") if "A" <= chr(i).upper() <= "Y" else
               ord("x") for i in range(128)) + b"x" * 128
#: the least either rule needs once the quiet bytes are out: six digits, a sign or separator (or neither), three
#: digits and a check character. Timestamps (``...T21:56:07.123456Z``), dates and most ids have six digits close
#: together but not this; its literal start lets the regular expression engine skip ahead at C speed
_CODE_SHAPE = re.compile(rb"000000[sL]?000[0Lc]")


def _has_code_shape(ascii_text: bytes) -> bool:
    return _CODE_SHAPE.search(ascii_text.translate(_PARTS, _QUIET)) is not None


def text_cannot_hold_code(text: str) -> bool:
    """A cheap proof that ``text`` holds no personal identity code and no NUL, also where ``cannot_hold_code``
    cannot tell (six digits close together: a timestamp's microseconds, an id): ASCII text without a code's
    shape (``_CODE_SHAPE``, which every code either rule finds in ASCII text has)."""
    return text.isascii() and "\x00" not in text and not _has_code_shape(text.encode("ascii"))


#: joins texts checked together: no part of a code (``_PARTS`` reads it ``x``), so no shape spans two texts
_JOIN = ","


def not_proven_clean(texts: list[str]) -> list[int]:
    """The indices of the ``texts`` that ``text_cannot_hold_code`` does not prove clean, found in one pass over them
    all (what the system draws in bulk: ids, codes): joined by a character that is no part of a code, the shape
    search of the joined text finds exactly the shapes of each text (no shape can span the join), each at its
    text's place. Texts with what the joined pass cannot place (non-ASCII, NUL, the quiet bytes ``_has_code_shape``
    drops) are checked one by one. Equal, text by text, to ``[i for i, t in enumerate(texts) if not
    text_cannot_hold_code(t)]`` (property-tested)."""
    joined = _JOIN.join(texts)
    if not joined.isascii() or "\x00" in joined:
        return [i for i, t in enumerate(texts) if not text_cannot_hold_code(t)]
    data = joined.encode("ascii")
    parts = data.translate(_PARTS, _QUIET)
    if len(parts) != len(data):  # a quiet byte somewhere: positions would shift
        return [i for i, t in enumerate(texts) if not text_cannot_hold_code(t)]
    found: list[int] = []
    starts: list[int] | None = None
    for m in _CODE_SHAPE.finditer(parts):
        if starts is None:
            starts, at = [], 0
            for t in texts:
                starts.append(at)
                at += len(t) + 1
        i = bisect_right(starts, m.start()) - 1
        if not found or found[-1] != i:
            found.append(i)
    return found


def json_strings_cannot_hold_code(body: bytes) -> bool:
    """A cheap proof that no string (key or value) of this JSON document holds a personal identity code or a NUL,
    without parsing it: an ASCII body without a backslash has no escapes, so its strings are exactly the bytes
    between pairs of quotes; the whole body is searched for a code's shape at once (its strings are part of it),
    and only where it has one are the strings read one by one (the full matcher on those with the shape). False
    means only "not proven here" (non-ASCII text or escapes: parse it and use ``find_in``). Valid only for a body
    that then parses as JSON (in one that does not, quotes need not pair)."""
    if not body.isascii() or b"\\" in body or b"\x00" in body:
        return False
    if not _has_code_shape(body):
        return True
    return not any(_has_code_shape(s) and contains_personal_identity_code(s.decode("ascii"))
                   for s in body.split(b'"')[1::2])


def body_cannot_hold_code(body: bytes) -> bool:
    """A cheap proof that neither the raw text of this JSON document (numbers and all, as a consumer of outside
    systems' messages searches it) nor any string (key or value) of it once parsed holds a personal identity code
    or a NUL: ASCII without a backslash, so without escapes (each string is then a part of the text between two
    quotes, which are neither digits nor letters, so whatever either rule finds in a string it finds in the text),
    and without a code's shape anywhere, or, where it has one (a UUID now and then), without a code found by the
    full matcher in the whole text at once. False means only "not proven here" (parse it and use ``find_in``)."""
    return body.isascii() and b"\\" not in body and b"\x00" not in body and (
        not _has_code_shape(body) or not contains_personal_identity_code(body.decode("ascii")))


def cannot_hold_code(text: str) -> bool:
    """A cheap proof that ``text`` holds no personal identity code and no NUL (``find_in`` is then moot)."""
    return text.isascii() and "\x00" not in text and "\\" not in text and not _SIX_DIGITS_SPREAD_TEXT.search(text)


def _fold_char(c: str) -> str:
    """How one character (after NFKC) reads in the matcher's alphabet (before upper-casing)."""
    if c in _DASHES:
        return "-"
    if c in _PLUSES:
        return "+"
    category = unicodedata.category(c)
    if category == "Pd":
        return "-"
    if c.isspace() or category in ("Zs", "Zl", "Zp"):
        return " "
    if category in ("Cc", "Cf", "Mn", "Me", "Cs", "Co", "Cn"):
        return ""
    if category == "Nd":
        return str(unicodedata.digit(c))
    return c


class _FoldTable(dict):
    """``str.translate`` table filled as characters are met (cached for the Basic Multilingual Plane)."""

    def __missing__(self, codepoint: int) -> str:
        folded = _fold_char(chr(codepoint))
        if codepoint < 0x10000:
            self[codepoint] = folded
        return folded


_ASCII_FOLD = {i: (" " if chr(i).isspace() else "") for i in [*range(0x20), 0x7f]}
_ASCII_FOLD[0x20] = " "
_FOLD = _FoldTable(_ASCII_FOLD)


def normalise(text: str) -> str:
    """The text as the matcher reads it: NFKC, dashes ``-``, spaces one ASCII space, invisible characters
    gone, every decimal digit ASCII, upper case. (Rule 1 also drops the spaces.)"""
    if text.isascii():
        return (text.translate(_ASCII_FOLD) if _ASCII_INVISIBLE.search(text) else text).upper()
    return unicodedata.normalize("NFKC", text).translate(_FOLD).upper()


def _date_exists(ddmmyy: str, centuries: tuple[int, ...]) -> bool:
    day, month, year = int(ddmmyy[0:2]), int(ddmmyy[2:4]), int(ddmmyy[4:6])
    for century in centuries:
        try:
            date(century + year, month, day)
        except ValueError:
            continue
        return True
    return False


def _check_is_right(ddmmyy: str, number: str, check: str) -> bool:
    return CHECK_CHARACTERS[int(ddmmyy + number) % 31] == check


def _with_sign(compact: str) -> bool:
    if not _WITH_SIGN_SHAPE.search(compact):
        return False
    for m in _WITH_SIGN.finditer(compact):
        ddmmyy, sign, number, check = m.groups()
        if _check_is_right(ddmmyy, number, check) and _date_exists(ddmmyy, (CENTURY[sign],)):
            return True
    return False


def _without_sign(spaced: str) -> bool:
    if not _WITHOUT_SIGN_SHAPE.search(spaced):
        return False
    for m in _WITHOUT_SIGN.finditer(spaced):
        ddmmyy, number, check = m.groups()
        if _check_is_right(ddmmyy, number, check) and _date_exists(ddmmyy, _CENTURIES):
            return True
    return False


def contains_personal_identity_code(text: str | None) -> bool:
    """True when ``text`` holds a valid personal identity code, written in any of the ways the module
    docstring lists."""
    if not text:
        return False
    if text.isascii() and (len(text) < 10 or not _SIX_DIGITS_SPREAD_TEXT.search(text)):
        return False
    spaced = normalise(text)
    return _with_sign(spaced.replace(" ", "")) or _without_sign(spaced)


def _strings(value: Any, path: tuple) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                yield path, k
            yield from _strings(v, (*path, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def find_in(value: Any, path: tuple = ()) -> tuple[tuple, str] | None:
    """The first place in ``value`` holding personal data or a NUL character, as (location,
    reason) with reason ``personal_identity_code`` (``REASON``) or ``nul_character``; None when clean."""
    for loc, s in _strings(value, path):
        if "\x00" in s:
            return loc, "nul_character"
        if contains_personal_identity_code(s):
            return loc, REASON
    return None
