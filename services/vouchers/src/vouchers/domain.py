"""Voucher rules, pure: no I/O, no clock of their own (today and now are passed in).

Field rules (references, category) raise ``PydanticCustomError`` so that the request types in
``schemas.py`` collect every field error of one request into one 422; rules that need the time or
the database's facts raise ``DomainError`` with a named reason from the use cases.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic_core import PydanticCustomError

from seteli_shared.auth import FUNDER_ROLES, PROVIDER_ROLES, Principal, Role
from seteli_shared.catalogue import CATEGORIES
from seteli_shared.errors import DomainError
from seteli_shared.privacy import contains_personal_identity_code
from seteli_shared.approvals import (APPROVED, REVOKED, SUSPENDED, ApprovalState,  # noqa: F401 (the services' rules)
                                     LifeCycleChange, apply_approved, apply_change)

ISSUED = "issued"
PROVIDER_CHOSEN = "provider_chosen"
STATUSES = (ISSUED, PROVIDER_CHOSEN)
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{2,63}$")


# ------------------------------------------------------------------ field rules
def valid_reference(value: str) -> str:
    """A funder's pseudonymous reference (client or decision): 3-64 letters, digits or ._:/-, never a
    personal identity code. The messages never contain the value: it could be personal data."""
    if contains_personal_identity_code(value):
        raise PydanticCustomError("personal_identity_code",
                                  "must be a pseudonymous reference, not a personal identity code")
    if not _REF.match(value):
        raise PydanticCustomError("invalid_reference", "must be 3-64 letters, digits or ._:/- "
                                  "starting with a letter or digit")
    return value


def known_category(value: str) -> str:
    if value not in CATEGORIES:
        raise PydanticCustomError("unknown_category", "unknown service category")
    return value


# ------------------------------------------------------------------ validity
#: a decision may be recorded late, but not more than this after the service began
MAX_BACKDATING = timedelta(days=365)
#: a decision is made for a service starting within this time
MAX_START_AHEAD = timedelta(days=365)
#: the longest validity of one voucher (a longer need gets a new decision)
MAX_VALIDITY_YEARS = 5


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check_validity(valid_from: date, valid_until: date, today: date) -> None:
    """The validity of a new voucher (reason ``invalid_validity``):

    - it ends on or after the day it begins, and not before today (a voucher already over is useless);
    - it begins at most ``MAX_BACKDATING`` (a year) before today and at most ``MAX_START_AHEAD``
      (a year) after today;
    - it lasts at most ``MAX_VALIDITY_YEARS`` (five years) from its first day.
    """
    def refuse(message: str) -> DomainError:
        return DomainError("invalid_validity", message, valid_from=valid_from.isoformat(),
                           valid_until=valid_until.isoformat())

    if valid_until < valid_from:
        raise refuse("valid_until is before valid_from")
    if valid_until < today:
        raise refuse("valid_until is in the past")
    if valid_from < today - MAX_BACKDATING:
        raise refuse("valid_from is more than a year in the past")
    if valid_from > today + MAX_START_AHEAD:
        raise refuse("valid_from is more than a year ahead")
    if valid_until > _years_after(valid_from, MAX_VALIDITY_YEARS):
        raise refuse(f"a voucher is valid for at most {MAX_VALIDITY_YEARS} years")


def check_choosable(status: str, valid_until: date, today: date) -> None:
    if today > valid_until:
        raise DomainError("voucher_expired", "the voucher's validity has ended")
    if status not in STATUSES:
        raise DomainError("voucher_not_active", f"the voucher is {status}")


def check_provider_approved(approved: bool) -> None:
    if not approved:
        raise DomainError("provider_not_approved",
                          "the provider is not approved by this funder for this service category")


def check_provider_in_force(state: ApprovalState | None, day: date) -> None:
    """The provider may be chosen on ``day``: approved, and neither suspended nor revoked from that day
    or before (reasons ``provider_suspended``, ``provider_revoked``, ``provider_not_approved``)."""
    if state is not None and state.not_in_force_from is not None and state.not_in_force_from <= day:
        if state.status == REVOKED:
            raise DomainError("provider_revoked", "the provider's approval for this funder and service category "
                              "has been revoked", effective_from=state.not_in_force_from.isoformat())
        if state.status == SUSPENDED:
            raise DomainError("provider_suspended", "the provider's approval for this funder and service category "
                              "is suspended", effective_from=state.not_in_force_from.isoformat())
    check_provider_approved(state is not None and state.approved_at is not None)


def check_funder_known(known: bool) -> None:
    if not known:
        raise DomainError("unknown_funder", "this funder is not registered (the registry has not announced it)")


# ------------------------------------------------------------------ who sees what
class Audience(StrEnum):
    """Whom a voucher is shown to; each sees only what it needs."""

    FUNDER = "funder"  # the voucher's funder and operator staff: everything but login material
    PROVIDER = "provider"  # the chosen provider: what it needs to charge, no client or decision refs
    CLIENT = "client"  # the client: its voucher's terms, no decision internals


def audience_of(principal: Principal) -> Audience:
    if principal.is_operator or principal.roles & FUNDER_ROLES:
        return Audience.FUNDER
    if principal.roles & PROVIDER_ROLES:
        return Audience.PROVIDER
    if Role.CLIENT in principal.roles:
        return Audience.CLIENT
    raise ValueError("no audience for these roles")  # require(...) lets no one else in


# ------------------------------------------------------------------ client's light login
def hash_login_code(code: str, salt: str) -> str:
    """What is stored of a client login code: HMAC-SHA256 keyed with the voucher's own salt."""
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


def login_code_matches(code: str | None, salt: str | None, stored: str | None) -> bool:
    """Constant-time comparison with the stored hash; nothing matches a voucher without a code."""
    if not (code and salt and stored):
        return False
    return hmac.compare_digest(hash_login_code(code, salt), stored)


@dataclass(frozen=True)
class ThrottleLimits:
    per_voucher: int
    per_source: int
    window: timedelta


def retry_after(failures_of_voucher: list[datetime], failures_of_source: list[datetime], now: datetime,
                limits: ThrottleLimits) -> int | None:
    """Seconds until a light login may be tried again, or None when it may be tried now.

    Each list holds the times of failed attempts (of this voucher, of this source address). When
    one holds ``limit`` failures within the window, every attempt (even with the right code) is
    refused until enough of them have aged out of the window that fewer than ``limit`` remain.
    Refused attempts are not failures: the block ends when the window has passed.
    """
    waits = []
    for failures, limit in ((failures_of_voucher, limits.per_voucher), (failures_of_source, limits.per_source)):
        recent = sorted(t for t in failures if now - limits.window < t <= now)
        if len(recent) >= limit:
            # the block lifts when the (len - limit + 1)-th oldest failure leaves the window
            frees_at = recent[len(recent) - limit] + limits.window
            waits.append(max(1, int((frees_at - now).total_seconds() + 0.999)))
    return max(waits) if waits else None
