"""Every identifier, code, secret, digest and cursor the system makes itself, made so that the privacy
guard can never take it for a personal identity code.

The guard (``privacy``) finds a code glued inside any text, so random text trips it now and then: a
random version 4 UUID about once in 27,000, a SHA-256 hex digest about once in 2,800 (the hex letters
``A``-``F`` are century signs). What the system generates comes back to it in requests (a resource's id in
a path, a voucher code typed by a client, a cursor, a settlement's RF reference on a bank statement) and
is stored and logged; refusing it would break the system at random. So each value here is drawn again
(random values) or derived again with a counter (digests) until the guard finds nothing in it,
nor in what is derived from it (``derived``: e.g. a settlement's RF reference is made from its id).

Use these, never ``uuid.uuid4()``, ``secrets.token_*`` or a bare ``hexdigest()``, for anything the
services create. A redraw is rare (the first draw of an id is clean 99.996 % of the time), so it costs
nothing measurable; the guard's check itself is what a draw costs (about 2-4 µs).
"""
from __future__ import annotations

import base64
import os
import secrets
from collections import deque
from typing import Any, Callable

from .privacy import contains_personal_identity_code, not_proven_clean, text_cannot_hold_code

#: a value the guard keeps flagging after this many draws means a broken ``draw`` (a constant), not bad luck
MAX_DRAWS = 1000


def _holds_code(text: str) -> bool:
    """The guard's finding on ``text``; most drawn values are proven clean by ``privacy.text_cannot_hold_code``
    (no code's shape: about 2 µs) without the full matcher (about 6 µs on hex, whose digits are often six
    close together)."""
    return not text_cannot_hold_code(text) and contains_personal_identity_code(text)


def _flagged(value: str, derived: Callable[[str], Any] | None) -> bool:
    if _holds_code(value):
        return True
    if derived is None:
        return False
    more = derived(value)
    return any(_holds_code(v) for v in ([more] if isinstance(more, str) else more))


def clean(draw: Callable[[], str], derived: Callable[[str], Any] | None = None) -> str:
    """The first value of ``draw()`` in which the privacy guard finds no personal identity code, nor in
    ``derived(value)`` (a text or texts made from it that are also stored or sent back)."""
    for _ in range(MAX_DRAWS):
        value = draw()
        if not _flagged(value, derived):
            return value
    raise RuntimeError("every drawn value looked like a personal identity code: the draw is not random")


def clean_derived(draw: Callable[[], str], derived: Callable[[str], str]) -> tuple[str, str]:
    """``clean(draw, derived)`` for one derived text, returned with the value (made once: a salt and its hash)."""
    for _ in range(MAX_DRAWS):
        value = draw()
        more = derived(value)
        pair = [value, more]
        if not any(contains_personal_identity_code(pair[i]) for i in not_proven_clean(pair)):
            return value, more
    raise RuntimeError("every drawn value looked like a personal identity code: the draw is not random")


def clean_values(values: list[str], derived: Callable[[str], str] | None = None) -> list[str]:
    """The ``values`` (drawn in bulk) the privacy guard passes, each with its ``derived`` text, in order: what
    ``clean`` would keep of them, checked at once (``privacy.not_proven_clean`` over them all; the full matcher
    only on the few it cannot prove clean)."""
    texts = values if derived is None else [t for v in values for t in (v, derived(v))]
    step = 1 if derived is None else 2
    flagged = {i // step for i in not_proven_clean(texts) if contains_personal_identity_code(texts[i])}
    return [v for i, v in enumerate(values) if i not in flagged] if flagged else values


def _uuid4_text() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it, at a fifth of its cost (a bulk
    of charges makes four per line). Its 16 random bytes come from ``os.urandom`` like ``uuid.uuid4()``'s, read
    ``_POOL_IDS`` ids' worth at a time (one system call, not one an id)."""
    try:
        h = _pool.popleft()  # atomic: two threads never take the same bytes
    except IndexError:
        h = _refill()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_POOL_IDS = 256
_pool: deque[str] = deque()


def _refill() -> str:
    """Random bytes for ``_POOL_IDS`` ids, as hex: one for the caller, the others pooled."""
    h = os.urandom(16 * _POOL_IDS).hex()
    _pool.extend(h[i:i + 32] for i in range(32, len(h), 32))
    return h[:32]


# a child process made by fork must not draw the ids its parent will (the pool is memory both would share)
os.register_at_fork(after_in_child=lambda: (_pool.clear(), _ids.clear()))


#: the RFC 4122 variant (10xx) in the first hex digit of the fourth group
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


#: ids drawn and checked in bulk (``clean_values``), taken one at a time by ``new_id``
_ids: deque[str] = deque()


def new_id(derived: Callable[[str], Any] | None = None) -> str:
    """A new id of a resource, event or request: a random version 4 UUID the guard passes (and whose
    ``derived`` texts it passes). Without ``derived``, ``_POOL_IDS`` ids are drawn and checked at once and
    handed out one by one (a decision run makes four a voucher)."""
    if derived is not None:
        return clean(_uuid4_text, derived)
    try:
        return _ids.popleft()  # atomic: two threads never take the same id
    except IndexError:
        pass
    for _ in range(MAX_DRAWS):
        h = os.urandom(16 * _POOL_IDS).hex()
        fresh = clean_values([f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
                              f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, len(h), 32)])
        if fresh:
            _ids.extend(fresh[1:])
            return fresh[0]
    raise RuntimeError("every drawn value looked like a personal identity code: the draw is not random")


def new_hex(nbytes: int = 16) -> str:
    """Random bytes as hex (a salt), clean."""
    return clean(lambda: secrets.token_hex(nbytes))


def new_secret(nbytes: int = 32, prefix: str = "") -> str:
    """A random URL-safe secret (a webhook signing secret), clean."""
    return clean(lambda: prefix + secrets.token_urlsafe(nbytes))


def digest_text(hasher: Any, length: int | None = None) -> str:
    """The hex digest of ``hasher`` (a ``hashlib`` or ``hmac`` object), cut to ``length``, that the guard
    passes: when the plain digest would be flagged, the digest of the same input followed by one more
    byte (1, 2, ...) is taken instead. Deterministic, so equal inputs still give equal digests."""
    for n in range(MAX_DRAWS):
        h = hasher
        if n:
            h = hasher.copy()
            h.update(bytes([n % 256]) * (n // 256 + 1))
        text = h.hexdigest()[:length]
        if not contains_personal_identity_code(text):
            return text
    raise RuntimeError("no clean digest")  # pragma: no cover  (1 in 2,800 ** 1000)


def cursor_text(raw: str) -> str:
    """A page cursor: ``raw`` (JSON, ASCII as ``json.dumps`` writes it by default) base64url-encoded. The guard
    can never flag one, so the next page's request is never refused: each group of four base64 characters of
    ASCII bytes starts with a letter (a byte under 0x80 has its top six bits in 0-31: ``A``-``f``), so six digits
    never stand in a row, and both of the guard's rules need six."""
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode()
