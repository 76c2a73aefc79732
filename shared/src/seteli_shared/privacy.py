"""The privacy guard: the operator knows clients only by pseudonymous references, so a Finnish
personal identity code (henkilötunnus, HETU) must never enter any service.

This module recognises one wherever it hides in text: any century sign (``+`` 1800s; ``-`` and
``Y X W V U`` 1900s; ``A B C D E F`` 2000s, the signs of the 2023 reform included), lower case,
Unicode dashes for the ``-``, spaces or invisible characters between its parts, inside longer
text. A candidate counts when its date exists and its check character is right, so ordinary
references that merely look similar pass.

``find_in(value)`` walks any JSON-like value (nested objects and lists; keys too) and names the
first offending place; the HTTP layer (``web.py``) runs it over every request and the consumer
over every event. Nothing here ever echoes the code itself.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any, Iterator

CHECK_CHARACTERS = "0123456789ABCDEFHJKLMNPRSTUVWXY"
CENTURY = {"+": 1800, "-": 1900, "Y": 1900, "X": 1900, "W": 1900, "V": 1900, "U": 1900,
           "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}

# after normalising: DDMMYY, century sign, NNN, check character (looked for at every position)
_CANDIDATE = re.compile(r"(?=(\d{6})([-+A-FU-Y])(\d{3})([0-9A-Y]))")
_SIX_DIGITS = re.compile(r"\d{6}")
_FAST_PATH = re.compile(r"\d")
#: six ASCII digits with nothing but ASCII spaces or control characters between them (``_normalise`` drops
#: those): ASCII text without one (and without a backslash, i.e. JSON escapes) cannot hold a personal
#: identity code. As bytes for bodies (``web``), as text for lines (``cannot_hold_code``).
SIX_DIGITS_SPREAD = rb"[0-9](?:[\x00-\x20\x7f]*[0-9]){5}"
_SIX_DIGITS_SPREAD_TEXT = re.compile(SIX_DIGITS_SPREAD.decode("ascii"))


def cannot_hold_code(text: str) -> bool:
    """A cheap proof that ``text`` holds no personal identity code and no NUL (``find_in`` is then moot)."""
    return text.isascii() and "\x00" not in text and "\\" not in text and not _SIX_DIGITS_SPREAD_TEXT.search(text)


def _fold(ch: str) -> str:
    """One character as the matcher sees it: compatibility forms folded (NFKC, so full-width
    digits count), every dash ``-``, upper case; whitespace and invisible characters vanish."""
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        cat = unicodedata.category(c)
        if cat == "Pd" or c in "\u2212\u00ad\ufe63\uff0d":
            out.append("-")
        elif c.isspace() or cat in ("Cf", "Zs", "Zl", "Zp", "Cc"):
            continue
        else:
            out.append(c.upper())
    return "".join(out)


def _normalise(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index of the original it came from
    (so that a candidate's neighbours can be looked at in the text as written)."""
    folded: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        f = ch.upper() if ch.isascii() and ch.isalnum() else _fold(ch)
        folded.append(f)
        origin.extend([i] * len(f))
    return "".join(folded), origin


def _glued(text: str, i: int) -> bool:
    """Whether the written character at ``i`` is a letter or digit (a candidate touching one is
    a fragment of a longer token, such as a UUID or a hex digest, not a code someone wrote)."""
    if i < 0 or i >= len(text):
        return False
    return any(c.isalnum() for c in _fold(text[i]))


def _is_valid(ddmmyy: str, sign: str, number: str, check: str) -> bool:
    try:
        date(CENTURY[sign] + int(ddmmyy[4:6]), int(ddmmyy[2:4]), int(ddmmyy[0:2]))
    except ValueError:
        return False
    return CHECK_CHARACTERS[int(ddmmyy + number) % 31] == check


def contains_personal_identity_code(text: str | None) -> bool:
    """True when ``text`` holds a valid personal identity code standing as a token of its own:
    at the start or end of the text or next to anything but a letter or digit. Codes glued inside
    a longer run of letters and digits (``3f120385a123b9...`` in a UUID) are not codes anyone wrote,
    and refusing them would refuse about one random identifier in ten thousand."""
    if not text or len(text) < 11 or not _FAST_PATH.search(text):
        return False
    folded, origin = _normalise(text)
    if not _SIX_DIGITS.search(folded):
        return False
    for m in _CANDIDATE.finditer(folded):
        if not _is_valid(*m.groups()):
            continue
        start, end = m.start(1), m.end(4) - 1
        if _glued(text, origin[start] - 1) or _glued(text, origin[end] + 1):
            continue
        return True
    return False


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
    reason) with reason ``personal_identity_code_refused`` or ``nul_character``; None when clean."""
    for loc, s in _strings(value, path):
        if "\x00" in s:
            return loc, "nul_character"
        if contains_personal_identity_code(s):
            return loc, "personal_identity_code_refused"
    return None
