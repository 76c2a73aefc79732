"""Short, unguessable codes with a check character (Crockford base32, ISO 7064 mod 37 check), drawn clean
(``ids.clean_values``): a client types them back, and the privacy guard must never take one for an identity code.

People read these codes aloud on the phone and type them from a letter, so a new code is made of
Crockford's 32 symbols only (digits and capitals without I, L, O and U): its check symbol is the mod 37
check, drawn again until it is one of those 32 rather than ``*``, ``~``, ``$``, ``=`` or ``U`` (codes made
before, such as ``7RH8ZB3RZ5=``, keep their check and are still accepted). A code is stored and sent
between services compact (``7RH8ZB3RZ5K``) and shown to people in groups of four (``7RH8-ZB3R-Z5K``,
``grouped``); reading one back (``normalise``) ignores case, spaces and dashes of any kind and takes
Crockford's look-alikes (O for 0, I and L for 1)."""
from __future__ import annotations

import os
import secrets
import unicodedata
from collections import deque

from .ids import MAX_DRAWS, clean_values

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CHECK = ALPHABET + "*~$=U"  # 37 check symbols
GROUP = 4
#: what people write for a symbol that is not in the alphabet (Crockford's decoding)
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


#: a random byte's symbol: its low five bits (each symbol stands for 8 of the 256 byte values, so a uniformly
#: random byte gives a uniformly random symbol, as ``secrets.choice(ALPHABET)`` would, from one read of the
#: operating system's random source for the whole code instead of one or more a symbol)
_SYMBOL_OF_BYTE = bytes(ord(ALPHABET[i % 32]) for i in range(256))


#: each symbol as the digit of its value in the base ``int(..., 32)`` reads (0-9, a-v)
_AS_BASE32 = str.maketrans(ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def _check_symbol(body: str) -> str:
    # the body as a base-32 number, its first symbol the most significant (read by ``int`` at C speed)
    return CHECK[int(body.translate(_AS_BASE32), 32) % 37] if body else CHECK[0]


#: codes drawn and checked in bulk, per length, handed out one by one by ``new_code``
_CODES_AT_ONCE = 64
_codes: dict[int, deque[str]] = {}
os.register_at_fork(after_in_child=_codes.clear)  # a child made by fork must not hand out its parent's codes


def new_code(length: int = 10) -> str:
    """``length`` random symbols (5 bits each) and a check symbol, all of the 32 readable ones, e.g.
    ``7KQ2M9XH4DK``; clean for the privacy guard compact and grouped alike. Drawn ``_CODES_AT_ONCE`` at a time
    (one read of the random source, one check by the guard, ``ids.clean_values``)."""
    pool = _codes.get(length)
    if pool is None:
        pool = _codes.setdefault(length, deque())
    try:
        return pool.popleft()  # atomic: two threads never take the same code
    except IndexError:
        pass
    for _ in range(MAX_DRAWS):
        symbols = secrets.token_bytes(length * _CODES_AT_ONCE).translate(_SYMBOL_OF_BYTE).decode("ascii")
        drawn = []
        for i in range(0, len(symbols), length):
            body = symbols[i:i + length]
            check = _check_symbol(body)
            if check in ALPHABET:  # 32 draws in 37: no symbol that cannot be read aloud
                drawn.append(body + check)
        fresh = clean_values(drawn, derived=grouped)
        if fresh:
            pool.extend(fresh[1:])
            return fresh[0]
    raise RuntimeError("every drawn code looked like a personal identity code: the draw is not random")


def grouped(code: str) -> str:
    """A compact code as people read it: groups of four joined by dashes, the last group taking a lone
    symbol left over (``7RH8-ZB3R-Z5K``, a 13-symbol login code ``ABCD-EFGH-JKMNP``)."""
    parts = [code[i:i + GROUP] for i in range(0, len(code), GROUP)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [parts[-2] + parts[-1]]
    return "-".join(parts)


def _compact(code: str) -> str:
    text = unicodedata.normalize("NFKC", code).upper()
    kept = [ch for ch in text if not (ch.isspace() or unicodedata.category(ch) in ("Pd", "Cf", "Zs")
                                      or ch == "\u2212")]
    return "".join(kept).translate(_LOOK_ALIKES)


def normalise(code: str) -> str | None:
    """The canonical (compact) code, or None when it is mistyped (wrong length, symbol or check)."""
    c = _compact(code)
    if len(c) < 2 or any(ch not in ALPHABET for ch in c[:-1]) or _check_symbol(c[:-1]) != c[-1]:
        return None
    return c
