"""Voucher rules, pure: no I/O, no clock of their own (today and now are passed in).

Field rules (references, category) raise ``PydanticCustomError`` so that the request types in
``schemas.py`` collect every field error of one request into one 422; rules that need the time or
the database's facts raise ``DomainError`` with a named reason from the use cases.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic_core import PydanticCustomError

from seteli_shared.auth import FUNDER_ROLES, PROVIDER_ROLES, Principal, Role
from seteli_shared import ids
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
    """What is stored of a client login code: HMAC-SHA256 keyed with the voucher's own salt.

    Deliberately a fast keyed hash, not a slow KDF (argon2, bcrypt, scrypt): a slow hash protects a secret
    people choose, which a guess from a short list may hit; a login code is drawn at random by the service
    (``usecases.LOGIN_CODE_LENGTH`` symbols of Crockford's 32: 60 bits), so a stolen table of hashes has to
    be attacked by 2^59 tries a code on average whatever the hash costs, and the online guesses are held
    back by the login throttle (``login_wait``), not by the hash. A slow KDF would cost tens of milliseconds
    of CPU per voucher issued (a decision run of 128 would take seconds of a core) for no such gain; this one
    costs about 4 µs (measured with the decision intake, issue 20). Every stored hash is of this form,
    so each one verifies with ``login_code_matches``; should a slow KDF ever be wanted, its hashes would need
    a prefix of their own to tell them apart from these."""
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


def login_code_matches(code: str | None, salt: str | None, stored: str | None) -> bool:
    """Constant-time comparison with the stored hash; nothing matches a voucher without a code."""
    if not (code and salt and stored):
        return False
    return hmac.compare_digest(hash_login_code(code, salt), stored)


# How failed light logins are slowed. The reasoning, in short (the README's "Who may call what" has it
# with the figures): a login code is 12 random symbols of 32 (60 bits), so what has to be stopped is
# guessing at volume, and what must never happen is a stranger keeping a client out. Failures are
# counted per key (``ThrottleKeys``) and only an address's OWN failures (with this voucher code, and with
# any) ever make it wait: the right code from an address that has not failed is let in, however many
# failures the voucher code has from elsewhere. The wait is checked before the code is looked at, so a
# waiting address learns nothing of its code (429 whether right or wrong), and keys are made from the
# voucher code as typed, so a code that belongs to no voucher is throttled exactly like one that does.
@dataclass(frozen=True)
class LoginThrottle:
    #: wrong codes for one voucher code from one address answered at once (then the waits begin)
    free_per_voucher_address: int
    #: wrong codes from one address, whatever voucher codes, answered at once
    free_per_address: int
    #: wrong codes for one voucher code from all addresses after which every address waits from its
    #: first wrong code for it: a guess spread over many addresses is slowed at each of them
    voucher_alarm: int
    first_delay: timedelta
    longest_delay: timedelta
    #: a key's failures are forgotten this long after its last one
    memory: timedelta


@dataclass(frozen=True)
class Failures:
    """The wrong codes counted under one key: how many, and when the last came."""

    count: int = 0
    last_at: datetime | None = None

    def current(self, now: datetime, memory: timedelta) -> "Failures":
        """As they stand now: forgotten once the memory has passed since the last one."""
        return self if self.last_at is not None and now - self.last_at < memory else Failures()


def delay_after(failures: int, free: int, throttle: LoginThrottle) -> timedelta:
    """The wait before the next attempt after ``failures`` wrong codes, ``free`` of which cost nothing:
    none below ``free``, then the first delay, doubling with each further failure up to the longest."""
    if failures < free:
        return timedelta(0)
    doublings = min(failures - free, 40)  # 2**40 first delays is beyond any longest delay
    return min(throttle.longest_delay, throttle.first_delay * 2 ** doublings)


def _wait(failures: Failures, free: int, now: datetime, throttle: LoginThrottle) -> int | None:
    if failures.last_at is None:
        return None
    until = failures.last_at + delay_after(failures.count, free, throttle)
    if until <= now:
        return None
    return max(1, math.ceil((until - now).total_seconds()))


def login_wait(of_voucher_address: Failures, of_address: Failures, of_voucher: Failures, now: datetime,
               throttle: LoginThrottle) -> int | None:
    """Seconds before this address may try this voucher code again, or None when it may now.

    Only the address's own failures make it wait. The voucher code's failures from every address
    count only by shrinking each address's free allowance for it to one once they pass the alarm.
    Attempts refused with a wait are not failures: hammering does not lengthen the wait.
    """
    of_voucher_address, of_address, of_voucher = (
        f.current(now, throttle.memory) for f in (of_voucher_address, of_address, of_voucher))
    free = 1 if of_voucher.count >= throttle.voucher_alarm else throttle.free_per_voucher_address
    waits = [w for w in (_wait(of_voucher_address, free, now, throttle),
                         _wait(of_address, throttle.free_per_address, now, throttle)) if w is not None]
    return max(waits) if waits else None


@dataclass(frozen=True)
class ThrottleKeys:
    """The keys one attempt is counted under: keyed hashes (HMAC-SHA256 with the service's secret) of
    the voucher code as typed and of the address's group (``seteli_shared.addresses.address_group``),
    so that the table holds neither."""

    voucher_address: str
    address: str
    voucher: str

    @classmethod
    def of(cls, voucher_code: str, address_group: str, secret: bytes) -> "ThrottleKeys":
        def key(*parts: str) -> str:
            return ids.digest_text(hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256))

        return cls(voucher_address=key("voucher+address", voucher_code, address_group),
                   address=key("address", address_group), voucher=key("voucher", voucher_code))
