"""Short, unguessable codes with a check character (Crockford base32, ISO 7064 mod 37 check), drawn clean
(``ids.clean``): a client types them back, and the privacy guard must never take one for an identity code."""
from __future__ import annotations

import secrets

from .ids import clean

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CHECK = ALPHABET + "*~$=U"  # 37 check symbols


def _check_symbol(body: str) -> str:
    return CHECK[sum(ALPHABET.index(c) * 32 ** i for i, c in enumerate(reversed(body))) % 37]


def new_code(length: int = 10) -> str:
    """``length`` random symbols (5 bits each) and a check symbol, e.g. ``7KQ2M9XH4D=``."""
    def draw() -> str:
        body = "".join(secrets.choice(ALPHABET) for _ in range(length))
        return body + _check_symbol(body)

    return clean(draw)


def normalise(code: str) -> str | None:
    """The canonical code, or None when it is mistyped (wrong length, symbol or check)."""
    c = code.strip().upper().replace("-", "").replace(" ", "").replace("O", "0").replace("I", "1").replace("L", "1")
    if len(c) < 2 or any(ch not in ALPHABET for ch in c[:-1]) or _check_symbol(c[:-1]) != c[-1]:
        return None
    return c
