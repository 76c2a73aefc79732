"""What the charge engine (``engine``) works on: a batch's lines, the state its rules read (``ChargeState``,
loaded by a store), the charges it accepts and each line's answer (``Outcome``). Plain data: the rules are
``engine``'s."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from seteli_shared.errors import DomainError

from . import domain, lifecycle


@dataclass(frozen=True, slots=True)
class Line:
    """A charge line that passed its field checks: its position in the batch and what it asks."""

    index: int
    voucher_id: str | None
    voucher_code: str | None
    provider_reference: str
    req: domain.ChargeRequest


@dataclass(frozen=True, slots=True)
class VoucherOnFile:
    """A voucher as payments' projection holds it: its terms (None until ``VoucherIssued`` is heard), its
    revocation and the funder's carry-over rule."""

    voucher_id: str
    terms: domain.VoucherTerms | None
    revoked_at: datetime | None = None
    revoked_from: date | None = None
    carry_over: bool = False


@dataclass(frozen=True, slots=True)
class Earlier:
    """A charge with a line's provider reference: a repeated line is compared with it."""

    id: str
    voucher_id: str
    service_date: date
    units_x100: int
    tariff: str | None
    unit_price_cents: int


class Used:
    """Units and money charged per voucher and service date (not cancelled, less what corrections removed),
    and the sums per period asked for so far; a charge accepted in the batch adds to both."""

    def __init__(self) -> None:
        self.days: dict[str, dict[date, list[int]]] = {}
        self.periods: dict[str, dict[tuple[date, date], list[int]]] = {}

    def add_day(self, voucher_id: str, day: date, units: int, money: int) -> None:
        sums = self.days.setdefault(voucher_id, {}).setdefault(day, [0, 0])
        sums[0] += units
        sums[1] += money

    def period(self, voucher_id: str, start: date, end: date) -> list[int]:
        cached = self.periods.get(voucher_id)
        if cached is None:
            cached = self.periods[voucher_id] = {}
        sums = cached.get((start, end))
        if sums is None:
            days = self.days.get(voucher_id, {})
            sums = [sum(v[0] for d, v in days.items() if start <= d <= end),
                    sum(v[1] for d, v in days.items() if start <= d <= end)]
            cached[(start, end)] = sums
        return sums

    def accept(self, voucher_id: str, day: date, units: int, money: int) -> None:
        self.add_day(voucher_id, day, units, money)
        for (start, end), sums in self.periods.get(voucher_id, {}).items():
            if start <= day <= end:
                sums[0] += units
                sums[1] += money


@dataclass
class ChargeState:
    """Everything the rules read for one batch, loaded before they run (``ChargeStore.load``)."""

    #: each line's voucher (a line whose code found none is not here)
    voucher_of: dict[int, str] = field(default_factory=dict)
    #: the codes the lines named that found a voucher for this provider (``codes.normalise``d): a bulk's next
    #: chunk is ruled ahead with them
    codes: dict[str, str] = field(default_factory=dict)
    vouchers: dict[str, VoucherOnFile] = field(default_factory=dict)
    #: the caller's charges by provider reference
    earlier: dict[str, Earlier] = field(default_factory=dict)
    used: Used = field(default_factory=Used)
    #: (funder, category) -> the caller's approval, and its price lists
    approvals: dict[tuple[str, str], domain.ApprovalState] = field(default_factory=dict)
    price_lists: dict[tuple[str, str], list[domain.PriceList]] = field(default_factory=dict)
    #: funder -> its charging deadline in days (None: the default)
    deadlines: dict[str, int | None] = field(default_factory=dict)
    choices: dict[str, list[lifecycle.Choice]] = field(default_factory=dict)
    #: what the rules work out per voucher and service date (or life cycle), the same for every line that
    #: names them: kept for the batch's later lines (``_periods``, ``_life_cycle``; pure functions of the above)
    memo: dict = field(default_factory=dict)
    #: each voucher this batch locked -> its row's ``version`` after the lock (a store that locks sets it), and the
    #: service dates whose units and money ``used`` holds whole for those vouchers (``engine.days_asked``)
    versions: dict[str, int] = field(default_factory=dict)
    used_range: tuple[date, date] | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """What a committed batch knew of its vouchers' units and money per service date (``ChargeState.used`` over
    ``used_range``, its own charges counted) and the versions it left their rows at: the next batch of a bulk
    takes a voucher's sums from here instead of reading them again when the row is still at that version plus
    its own lock's step (every change of a voucher's charges moves the version: a charge, a batch's lock, a
    cancellation, a correction) and its dates lie within ``used_range`` (``store.SessionChargeStore.load``)."""

    versions: dict[str, int]
    used_range: tuple[date, date]
    days: dict[str, dict[date, tuple[int, int]]]

    @classmethod
    def of(cls, state: "ChargeState", charges: "list[NewCharge] | None" = None) -> "Known | None":
        """``state``'s sums for the vouchers it locked, plus ``charges`` (accepted by rules that ran on another
        state with the same inputs: ``engine.Ahead``) when given; None when nothing was locked or read."""
        if not state.versions or state.used_range is None:
            return None
        days = {vid: {d: (v[0], v[1]) for d, v in state.used.days.get(vid, {}).items()} for vid in state.versions}
        for c in charges or ():
            its = days.get(c.voucher_id)
            if its is not None:
                u, m = its.get(c.req.service_date, (0, 0))
                its[c.req.service_date] = (u + c.req.units_x100, m + c.amounts.amount_cents)
        return cls(dict(state.versions), state.used_range, days)


@dataclass(frozen=True, slots=True)
class NewCharge:
    """An accepted line's charge, as the store writes it (with its ledger, event and audit rows)."""

    id: str
    voucher_id: str
    funder_id: str
    category: str
    provider_reference: str
    req: domain.ChargeRequest
    amounts: domain.ChargeAmounts
    accepted_at: datetime


@dataclass(slots=True)
class Outcome:
    """A line's answer: accepted (``charge``), repeated (the earlier charge's id) or refused (``error``)."""

    status: str
    charge_id: str | None = None
    error: DomainError | None = None
    charge: NewCharge | None = None

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.reason

    @property
    def details(self) -> dict | None:
        """The refusal's details as a line's answer carries them (without a hint meant for one request)."""
        if self.error is None:
            return None
        return {k: v for k, v in self.error.details.items() if k != "hint"} or None
