"""Helpers for demos, tests and benchmarks (never used by the services themselves)."""
from __future__ import annotations

import random

from stdnum.fi import ytunnus


def random_business_id(rng: random.Random | None = None) -> str:
    """A random valid Finnish business ID (Y-tunnus)."""
    rng = rng or random.Random()
    while True:
        base = f"{rng.randint(1000000, 9999999)}"
        for digit in "0123456789":
            if ytunnus.is_valid(f"{base}-{digit}"):
                return f"{base}-{digit}"
