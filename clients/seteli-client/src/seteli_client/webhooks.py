"""Verifying the settlement notices the platform POSTs to a provider's webhook (docs/webhooks.md).

Each POST carries ``X-Seteli-Signature: t=<unix seconds>,v1=<hex>``: the HMAC-SHA256, keyed with the UTF-8
bytes of the webhook's secret (the whole ``whsec_...`` text), of the ASCII ``<t>`` and ``.`` followed by the
request body exactly as received. A receiver computes it, compares in constant time, and refuses a
timestamp more than ``tolerance_seconds`` (300) from its own clock (a replayed request). The header may carry
several ``v1=`` values (one per secret valid while a secret is being rotated), and a receiver may hold
several secrets: any match of any pair is enough.

Rotation (``POST /providers/{provider_id}/webhook/secret``): for ``WEBHOOK_SECRET_GRACE_HOURS`` (24) after it,
every POST carries ``t=<t>,v1=<new>,v1=<previous>``, so ``verify`` accepts it with the previous secret alone,
with the new one alone, or with both; after the grace only the new secret signs.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER = "X-Seteli-Signature"
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value for one secret (what the platform sends)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def parse(header: str) -> tuple[int, list[str]] | None:
    """(timestamp, the ``v1`` signatures) of a header, or None when it cannot be read."""
    timestamp, signatures = None, []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if not value.isascii() or not value.isdigit():
                return None
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    return (timestamp, signatures) if timestamp is not None and signatures else None


def verify(secrets: str | Iterable[str], header: str, body: bytes, tolerance_seconds: int = TOLERANCE_SECONDS,
           now: float | None = None) -> bool:
    """Whether ``body`` came from the platform: a ``v1`` signature of the header matches one of ``secrets`` and
    the timestamp is within ``tolerance_seconds`` of ``now``."""
    parsed = parse(header or "")
    if parsed is None:
        return False
    timestamp, signatures = parsed
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    expected = [signature(key, timestamp, body) for key in keys]
    return any(hmac.compare_digest(e, s) for e in expected for s in signatures)
