"""The voucher's life cycle as charging sees it, pure (no I/O; today is passed in):

- **Switching provider.** Each choice covers services from the day it was made (``effective_from``):
  services delivered before a switch stay the previous provider's to charge; from the switch on only
  the new provider's (``provider_switched``). The first choice covers everything before it too.
  Units are the voucher's, not the provider's: a switch keeps what is left of the period.
- **Revocation.** A revoked voucher is charged only for services delivered before the revocation's
  effective date (``service_after_revocation``), and only within ``REVOKED_GRACE`` (30 days) of the
  revocation (``revoked_grace_passed``): counted from the later of the day the revocation was made and
  its effective date.
- **Expiry** changes nothing here: services inside the validity stay chargeable (the validity check).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from seteli_shared.errors import DomainError

#: how long after a revocation services delivered before it may still be charged
REVOKED_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class Choice:
    provider_id: str
    effective_from: date
    chosen_at: datetime


def provider_on(choices: list[Choice], service_date: date) -> str | None:
    """The provider whose service on ``service_date`` the voucher covers: the latest choice in force on
    that day, else (a service before the first choice) the first one; None without a choice."""
    if not choices:
        return None
    ordered = sorted(choices, key=lambda c: (c.effective_from, c.chosen_at, c.provider_id))
    in_force = [c for c in ordered if c.effective_from <= service_date]
    return (in_force[-1] if in_force else ordered[0]).provider_id


def check_chosen_on(choices: list[Choice], provider_id: str, service_date: date) -> None:
    """A provider that was chosen once but is not the one for ``service_date``: ``provider_switched``,
    naming the day the voucher's client switched away from it (or to it, for services before)."""
    responsible = provider_on(choices, service_date)
    if responsible is None or responsible == provider_id or all(c.provider_id != provider_id for c in choices):
        return  # the ordinary rules decide (provider_not_chosen, not_chosen_provider)
    switches = sorted(c.effective_from for c in choices if c.provider_id == responsible and
                      c.effective_from <= service_date) or sorted(c.effective_from for c in choices)
    raise DomainError("provider_switched", "the voucher's client had switched to another provider by this "
                      "service date: only services delivered before the switch are this provider's to charge",
                      switched_on=switches[-1].isoformat())


def check_revocation(revoked_at: datetime | None, revoked_from: date | None, service_date: date,
                     today: date) -> None:
    """Charging a revoked voucher: only services before ``revoked_from``, only within the grace."""
    if revoked_from is None:
        return
    if service_date >= revoked_from:
        raise DomainError("service_after_revocation", "the voucher was revoked before this service was delivered",
                          revoked_from=revoked_from.isoformat())
    grace_from = max(revoked_from, revoked_at.date()) if revoked_at is not None else revoked_from
    grace_until = grace_from + REVOKED_GRACE
    if today > grace_until:
        raise DomainError("revoked_grace_passed", "services before a revocation may be charged for "
                          f"{REVOKED_GRACE.days} days after it, and they have passed",
                          grace_until=grace_until.isoformat())
