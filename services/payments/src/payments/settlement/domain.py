"""Settlement rules, pure (no I/O): when a provider's payout is made (the minimum payout and the 14-day
guarantee), which charges are at risk of missing the guarantee, and the payout's RF creditor reference.

- A settlement run happens every day of the year. Each provider's accepted charges are settled per
  funder: gross, the funder's fee, net (``domain.settle``).
- A payout whose net is under the minimum (EUR 40) waits for a later run (``HELD_BACK``) ...
- ... unless waiting would break the guarantee: a charge accepted on day D is paid by D + 14 days. The
  guarantee always wins: a group holding a charge whose release day (the deadline less a margin of
  days, the slack for runs that fail) has come is paid whatever its size (``PAY_GUARANTEE``). With a
  banking calendar the margin counts in runs whose payment files execute in time: a charge is paid now
  when, were it to wait a day, fewer than ``margin`` runs would be left whose files the bank executes by
  the deadline (before Easter that is the Tuesday before Good Friday: ``banking_days``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from stdnum import iso11649
from stdnum.iso7064 import mod_97_10

#: why a payout is made now, or why it waits
PAY_MINIMUM_REACHED = "minimum_reached"
PAY_GUARANTEE = "guarantee_due"
PAY_MANUAL = "manual"  # an operator's run settles everything (on the provider's request)
HELD_BACK = "below_minimum_payout"

DAILY = "daily"
MANUAL = "manual"


@dataclass(frozen=True)
class PayoutRules:
    min_payout_cents: int = 4000
    guarantee_days: int = 14
    margin_days: int = 2

    def deadline(self, accepted_at: datetime) -> date:
        """The last day a charge accepted at ``accepted_at`` may be paid on."""
        return accepted_at.date() + timedelta(days=self.guarantee_days)

    def release_day(self, accepted_at: datetime) -> date:
        """The day from which the guarantee pays the charge whatever the payout's size."""
        return self.deadline(accepted_at) - timedelta(days=min(self.margin_days, self.guarantee_days))


@dataclass(frozen=True)
class PayoutDecision:
    pay: bool
    reason: str


def last_run_executes(today: date, rules: PayoutRules, execution_of: Callable[[date], date] | None = None) -> date:
    """When the payment file of the run ``margin`` days after tomorrow would be executed: were a charge to
    wait a day, the last run that could still pay it in time. ``execution_of``: the day a file made on a day
    is executed (the next banking day; the same day without a calendar)."""
    last_chance = today + timedelta(days=1 + min(rules.margin_days, rules.guarantee_days))
    return execution_of(last_chance) if execution_of else last_chance


def guarantee_due(accepted_at: datetime, today: date, rules: PayoutRules,
                  execution_of: Callable[[date], date] | None = None) -> bool:
    """Whether the guarantee pays a charge today: were it to wait a day, the run ``margin`` days after
    tomorrow would execute after its deadline (without a calendar this is ``release_day <= today``)."""
    return last_run_executes(today, rules, execution_of) > rules.deadline(accepted_at)


def decide_payout(net_cents: int, accepted: Iterable[datetime], today: date, rules: PayoutRules,
                  hold_back: bool = True, execution_of: Callable[[date], date] | None = None) -> PayoutDecision:
    """Whether one provider's payout from one funder is made in today's run (``execution_of``: the banking
    calendar's next banking day, ``guarantee_due``)."""
    if not hold_back:
        return PayoutDecision(True, PAY_MANUAL)
    executes = last_run_executes(today, rules, execution_of)  # once for the group, not per charge
    if any(executes > rules.deadline(at) for at in accepted):
        return PayoutDecision(True, PAY_GUARANTEE)  # the guarantee wins over the minimum
    if net_cents >= rules.min_payout_cents:
        return PayoutDecision(True, PAY_MINIMUM_REACHED)
    return PayoutDecision(False, HELD_BACK)


@dataclass(frozen=True)
class AtRisk:
    charge_id: str
    deadline: date
    days_left: int  # negative: the guarantee is already broken


def at_risk(charge_id: str, accepted_at: datetime, today: date, rules: PayoutRules, window_days: int) -> AtRisk | None:
    """An unpaid charge with at most ``window_days`` left to its deadline, else None."""
    deadline = rules.deadline(accepted_at)
    left = (deadline - today).days
    return AtRisk(charge_id, deadline, left) if left <= window_days else None


# ------------------------------------------------------------------ RF creditor reference (ISO 11649)
def rf_reference(base: str) -> str:
    """The structured creditor reference ``RFkk<base>`` of an alphanumeric base (at most 21 characters),
    its check digits by ISO 7064 MOD 97-10, validated by ``stdnum.iso11649``."""
    body = re.sub(r"[^0-9A-Z]", "", base.upper())[:21]
    if not body:
        raise ValueError("an RF reference needs an alphanumeric base")
    reference = "RF" + mod_97_10.calc_check_digits(body + "RF") + body
    return iso11649.validate(reference)


def settlement_reference(settlement_id: str) -> str:
    """The RF reference of a settlement's payout: its id's first 21 alphanumerics."""
    return rf_reference(settlement_id)


def bank_id(run_or_settlement_id: str) -> str:
    """The id as the payment file carries it (``MsgId``, ``EndToEndId``): it comes back on bank statements."""
    return run_or_settlement_id.replace("-", "")[:35]


def bank_texts(settlement_id: str) -> tuple[str, str]:
    """What the bank gets of a settlement's id and sends back: its payment's end-to-end id and RF reference
    (``ids.new_id(bank_texts)`` draws again until neither reads as a personal identity code)."""
    return bank_id(settlement_id), settlement_reference(settlement_id)


# ------------------------------------------------------------------ the statement's VAT marking
VAT_EXEMPT = {
    "vat_exempt": True,
    "basis": "Arvonlisäverolaki (1501/1993) 34 §",
    "text": {
        "fi": "Arvonlisäverotonta sosiaalihuoltoa ja terveydenhoitopalvelua (AVL 34 §).",
        "sv": "Momsfri social- och hälsovårdstjänst (MomsL 34 §).",
        "en": "VAT-exempt social and health services (Finnish VAT Act, section 34).",
    },
}
