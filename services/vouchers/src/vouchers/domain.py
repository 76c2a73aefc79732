"""Voucher rules, pure: no I/O."""
from __future__ import annotations

import re
from datetime import date

from seteli_shared.catalogue import CATEGORIES
from seteli_shared.errors import DomainError
from seteli_shared.privacy import contains_personal_identity_code

ISSUED = "issued"
PROVIDER_CHOSEN = "provider_chosen"
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{2,63}$")


def check_reference(field: str, value: str) -> str:
    if contains_personal_identity_code(value):
        # never echo the value: it is personal data
        raise DomainError("personal_identity_code_refused",
                          f"{field} must be a pseudonymous reference, not a personal identity code")
    if not _REF.match(value):
        raise DomainError(f"invalid_{field}", f"{field} must be 3-64 letters, digits or ._:/-")
    return value


def check_voucher_terms(category: str, valid_from: date, valid_until: date) -> None:
    if category not in CATEGORIES:
        raise DomainError("unknown_category", f"unknown service category {category!r}")
    if valid_until < valid_from:
        raise DomainError("invalid_validity", "valid_until is before valid_from")


def check_choosable(status: str, valid_until: date, today: date) -> None:
    if today > valid_until:
        raise DomainError("voucher_expired", "the voucher's validity has ended")
    if status not in (ISSUED, PROVIDER_CHOSEN):
        raise DomainError("voucher_not_active", f"the voucher is {status}")
