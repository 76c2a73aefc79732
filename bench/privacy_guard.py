"""False positives of the identity-code guard (``seteli_shared.privacy``) on random text of the kinds the
system sees, and its cost.

For each kind it draws ``--n`` random values (10,000,000 by default), counts those the guard flags, and
prints the rate and the microseconds a check takes:

- ``uuid4``: random version 4 UUIDs as ``str(uuid.uuid4())`` writes them (raw, not from ``ids.new_id``, which
  draws again and is never flagged);
- ``sha256_hex``: SHA-256 hex digests (what ``ids.digest_text`` derives again when flagged);
- ``voucher_code`` / ``login_code``: Crockford base32 codes with their check symbol, as ``codes.new_code``
  draws them (11 and 13 characters; again raw, before ``ids.clean``);
- ``iban_compact`` / ``iban_spaced``: Finnish IBANs (a random 13-digit account with its Luhn digit, the
  IBAN check digits), ``FI2112345600000785`` and ``FI21 1234 5600 0007 85``;
- ``mobile_compact``, ``mobile_spaced``, ``mobile_international``: Finnish mobile numbers ``0401234567``,
  ``040 123 4567``, ``+358401234567``;
- ``business_id``: Y-tunnus with its check digit, ``2617416-4``;
- ``reference_10_digits``: a random ten-digit number standing alone (a provider's own invoice number, say):
  the shape of a code without its century sign.

A value of a kind flagged once in N means that, written alone in a field, it would be refused about once in
N times. The figures of the last run are in the README ("The HTTP edge") and in ``privacy``'s docstring.

    .venv/bin/python bench/privacy_guard.py                 # every kind, 10,000,000 each
    .venv/bin/python bench/privacy_guard.py --n 100000 --kinds uuid4 mobile_compact
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import time
from typing import Callable, Iterator

from seteli_shared.codes import ALPHABET, _check_symbol
from seteli_shared.privacy import contains_personal_identity_code

_VARIANT = "89ab"


def uuid4s(n: int) -> Iterator[str]:
    for _ in range(n):
        h = os.urandom(16).hex()
        yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def sha256_hexes(n: int) -> Iterator[str]:
    seed = os.urandom(16)
    for i in range(n):
        yield hashlib.sha256(seed + i.to_bytes(8, "big")).hexdigest()


def crockford_codes(length: int) -> Callable[[int], Iterator[str]]:
    def codes(n: int) -> Iterator[str]:
        rnd = random.Random(secrets.randbits(64))
        for _ in range(n):
            body = "".join(rnd.choices(ALPHABET, k=length))
            yield body + _check_symbol(body)
    return codes


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        v = int(d) * (2 if i % 2 == 0 else 1)
        total += v - 9 if v > 9 else v
    return str((10 - total % 10) % 10)


def _iban(rnd: random.Random) -> str:
    account = f"{rnd.randrange(10 ** 13):013d}"
    bban = account + _luhn_digit(account)
    check = 98 - int(bban + "151800") % 97  # "FI00" moved to the end, F=15, I=18
    return f"FI{check:02d}{bban}"


def ibans(spaced: bool) -> Callable[[int], Iterator[str]]:
    def gen(n: int) -> Iterator[str]:
        rnd = random.Random(secrets.randbits(64))
        for _ in range(n):
            iban = _iban(rnd)
            yield " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if spaced else iban
    return gen


def mobiles(form: str) -> Callable[[int], Iterator[str]]:
    def gen(n: int) -> Iterator[str]:
        rnd = random.Random(secrets.randbits(64))
        for _ in range(n):
            prefix, number = rnd.choice(("40", "41", "44", "45", "46", "50")), f"{rnd.randrange(10 ** 7):07d}"
            if form == "compact":
                yield f"0{prefix}{number}"
            elif form == "spaced":
                yield f"0{prefix} {number[:3]} {number[3:]}"
            else:
                yield f"+358{prefix}{number}"
    return gen


def business_ids(n: int) -> Iterator[str]:
    rnd = random.Random(secrets.randbits(64))
    made = 0
    while made < n:
        digits = f"{rnd.randrange(10 ** 7):07d}"
        r = sum(int(d) * w for d, w in zip(digits, (7, 9, 10, 5, 8, 4, 2))) % 11
        if r == 1:
            continue  # no valid check digit: such numbers are not given out
        made += 1
        yield f"{digits}-{0 if r == 0 else 11 - r}"


def ten_digits(n: int) -> Iterator[str]:
    rnd = random.Random(secrets.randbits(64))
    for _ in range(n):
        yield f"{rnd.randrange(10 ** 10):010d}"


KINDS: dict[str, Callable[[int], Iterator[str]]] = {
    "uuid4": uuid4s, "sha256_hex": sha256_hexes, "voucher_code": crockford_codes(10), "login_code": crockford_codes(12),
    "iban_compact": ibans(False), "iban_spaced": ibans(True), "mobile_compact": mobiles("compact"),
    "mobile_spaced": mobiles("spaced"), "mobile_international": mobiles("international"), "business_id": business_ids,
    "reference_10_digits": ten_digits,
}


def measure(kind: str, n: int) -> dict:
    values = KINDS[kind]
    flagged, example = 0, None
    chunk = 200_000
    spent = 0.0
    left = n
    while left:
        batch = list(values(min(chunk, left)))
        left -= len(batch)
        started = time.perf_counter()
        hits = [v for v in batch if contains_personal_identity_code(v)]
        spent += time.perf_counter() - started
        flagged += len(hits)
        example = example or (hits[0] if hits else None)
    return {"kind": kind, "n": n, "flagged": flagged, "rate": flagged / n,
            "one_in": round(n / flagged) if flagged else None, "us_per_check": round(spent / n * 1e6, 2),
            "example": example}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    results = []
    for kind in args.kinds:
        r = measure(kind, args.n)
        results.append(r)
        one_in = f"1 in {r['one_in']:,}" if r["one_in"] else "never"
        print(f"{kind:22} {r['n']:>12,} {r['flagged']:>9,} flagged  {one_in:>16}  {r['us_per_check']:6.2f} us/check"
              f"  e.g. {r['example']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
