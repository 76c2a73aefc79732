"""Payment rules, pure (no I/O): charge validation with machine-readable reasons, amounts,
settlement figures and the double-entry postings."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from seteli_shared import periods
from seteli_shared.errors import DomainError, NotFound
from seteli_shared.money import allocate, fee_cents, from_hundredths, round_cents, units_amount_cents
from seteli_shared.approvals import (APPROVED, REVOKED, SUSPENDED, ApprovalState,  # noqa: F401 (the services' rules)
                                     LifeCycleChange, apply_approved, apply_change)

ACCEPTED = "accepted"
SETTLED = "settled"


@dataclass(frozen=True)
class VoucherTerms:
    funder_id: str
    category: str
    units_per_period_x100: int
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    provider_id: str | None
    #: the voucher's kind (``KINDS``) and its kind's terms
    kind: str = "service_voucher"
    budget_cents: int | None = None
    categories: tuple[str, ...] = ()
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None


@dataclass(frozen=True)
class ChargeRequest:
    provider_id: str
    service_date: date
    units_x100: int
    unit_price_cents: int | None  # the provider's price per unit; defaults to the registered price or voucher value
    tariff: str | None = None  # weekday | weekday_evening | saturday | sunday: which price of the list
    category: str | None = None  # a personal budget's: which of its categories (default: the voucher's)


@dataclass(frozen=True)
class ChargeAmounts:
    unit_price_cents: int
    amount_cents: int  # paid by the funder through the voucher
    own_share_cents: int  # paid by the client to the provider (price above the voucher value)
    #: whether a price list of the provider's was in force on the service date
    price_registered: bool = False
    #: the price list's price for this charge (its tariff's, else its base price), when one was in force
    registered_price_cents: int | None = None
    price_list_id: str | None = None
    #: a client voucher's: the client's fixed fee for these units, owed to the funder
    client_fee_cents: int | None = None


# ------------------------------------------------------------------ voucher kinds
KINDS = ("service_voucher", "income_related", "client_voucher", "personal_budget")
SERVICE_VOUCHER, INCOME_RELATED, CLIENT_VOUCHER, PERSONAL_BUDGET = KINDS


def charge_category(terms: VoucherTerms, requested: str | None) -> str:
    """The category a charge is for: the voucher's, or for a personal budget any of its categories
    (``category_not_on_voucher`` otherwise)."""
    if requested is None or requested == terms.category:
        return terms.category
    if terms.kind == PERSONAL_BUDGET and requested in terms.categories:
        return requested
    raise DomainError("category_not_on_voucher", "the voucher does not cover this service category",
                      categories=list(terms.categories) or [terms.category])


def kind_amounts(terms: VoucherTerms, units_x100: int, price: int) -> tuple[int, int, int | None]:
    """(amount the funder pays, own share the client pays the provider, client fee owed to the funder)
    of ``units_x100`` hundredths of a unit at ``price`` cents per unit, by the voucher's kind:

    - service_voucher, income_related: the funder pays up to the value per unit, the client the rest;
    - client_voucher: the funder pays the price up to its maximum per unit, the client nothing to the
      provider but its fixed fee per unit to the funder;
    - personal_budget: the funder pays the whole price (within the budget: ``check_budget``)."""
    units = from_hundredths(units_x100)
    if terms.kind == CLIENT_VOUCHER:
        cap = terms.max_value_per_unit_cents or terms.value_per_unit_cents
        return (units_amount_cents(units, min(price, cap)), 0,
                units_amount_cents(units, terms.client_fee_cents or 0))
    if terms.kind == PERSONAL_BUDGET:
        return units_amount_cents(units, price), 0, None
    return (units_amount_cents(units, min(price, terms.value_per_unit_cents)),
            units_amount_cents(units, max(price - terms.value_per_unit_cents, 0)), None)


def check_budget(terms: VoucherTerms, amount_cents: int, money_used_cents: int) -> None:
    """A personal budget's charge fits in the money left for its period (``budget_exceeded``)."""
    left = (terms.budget_cents or 0) - money_used_cents
    if amount_cents > left:
        raise DomainError("budget_exceeded", "the charge is more than is left in the budget for this period",
                          budget_left_cents=max(left, 0))



def check_approval_covers(state: ApprovalState | None, service_date: date) -> None:
    """The approval covers a service delivered on ``service_date``: services before a suspension's or
    revocation's date may still be charged, those on or after it not (``provider_suspended``,
    ``provider_revoked``); without an approval, ``provider_not_approved``."""
    if state is not None and state.not_in_force_from is not None and state.not_in_force_from <= service_date:
        if state.status == REVOKED:
            raise DomainError("provider_revoked", "the provider's approval was revoked before this service was "
                              "delivered", effective_from=state.not_in_force_from.isoformat())
        if state.status == SUSPENDED:
            raise DomainError("provider_suspended", "the provider's approval is suspended from a date on or before "
                              "this service's", effective_from=state.not_in_force_from.isoformat())
    if state is None or state.approved_at is None:
        raise DomainError("provider_not_approved", "the provider is not approved for this funder and category")


# ------------------------------------------------------------------ the funder's charging deadline
#: a service must be charged within this many days of its date unless the funder's contract says otherwise
#: (three months: the usual term of Finnish funders' voucher rulebooks, "laskutettava kolmen kuukauden kuluessa")
DEFAULT_CHARGE_DEADLINE_DAYS = 90


def charge_deadline(service_date: date, deadline_days: int | None) -> date:
    """The last day a service delivered on ``service_date`` may be charged on."""
    days = DEFAULT_CHARGE_DEADLINE_DAYS if deadline_days is None else deadline_days
    return service_date + timedelta(days=days)


def check_charge_deadline(service_date: date, today: date, deadline_days: int | None) -> None:
    """A charge arriving after the funder's deadline is refused (``charge_deadline_passed``); the charge
    is on time up to and including the deadline's day."""
    last = charge_deadline(service_date, deadline_days)
    if today > last:
        raise DomainError("charge_deadline_passed", "the funder's deadline for charging this service has passed",
                          deadline=last.isoformat(),
                          deadline_days=DEFAULT_CHARGE_DEADLINE_DAYS if deadline_days is None else deadline_days)


# ------------------------------------------------------------------ registered prices
#: the time-of-day tariffs a price list may carry besides its base price
TARIFFS = ("weekday", "weekday_evening", "saturday", "sunday")


@dataclass(frozen=True)
class PriceList:
    """A provider's published price for a funder and category, in force from a date until a later one."""

    price_list_id: str
    effective_from: date
    published_at: datetime
    unit_price_cents: int
    tariffs: dict[str, int]


def price_in_force(lists: list[PriceList], service_date: date) -> PriceList | None:
    """The list in force on ``service_date``: the latest ``effective_from`` on or before it; of lists
    taking effect the same day, the one published last (then the greatest id, so that the choice
    never depends on the order they came in)."""
    candidates = [p for p in lists if p.effective_from <= service_date]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.effective_from, p.published_at, p.price_list_id))


def registered_price(price_list: PriceList, tariff: str | None) -> int:
    """The list's price for a tariff when it has one, else its base price."""
    if tariff is not None and tariff in price_list.tariffs:
        return price_list.tariffs[tariff]
    return price_list.unit_price_cents


def unit_price(terms: VoucherTerms, price_list: PriceList | None, req: ChargeRequest) -> tuple[int, int | None]:
    """The charge's unit price and the registered price it was checked against (None without a list).

    With a list in force: the price sent, if not above the registered price (else
    ``price_above_registered_price``), or the registered price. Without one: the price sent or the
    voucher's value, and no tariff may be asked for (``tariff_not_available``)."""
    if price_list is None:
        if req.tariff is not None:
            raise DomainError("tariff_not_available", "no price list of the provider is in force on the service "
                              "date, so it has no tariffs", tariff=req.tariff)
        if req.unit_price_cents is None and terms.kind == PERSONAL_BUDGET:
            raise DomainError("unit_price_required", "a personal budget has no value per unit: send the unit "
                              "price when no price list is in force")
        return (terms.value_per_unit_cents if req.unit_price_cents is None else req.unit_price_cents), None
    registered = registered_price(price_list, req.tariff)
    if req.unit_price_cents is None:
        return registered, registered
    if req.unit_price_cents > registered:
        raise DomainError("price_above_registered_price", "the unit price is above the provider's registered price "
                          "for this service date", registered_price_cents=registered,
                          price_list_id=price_list.price_list_id, tariff=req.tariff)
    return req.unit_price_cents, registered


def period_bounds(terms: VoucherTerms, service_date: date) -> tuple[date, date]:
    """The period whose units a charge on ``service_date`` uses (``seteli_shared.periods``: the rule
    vouchers shows the client by)."""
    return periods.period_bounds(terms.period, terms.valid_from, terms.valid_until, service_date)


def amounts(terms: VoucherTerms, units_x100: int, unit_price_cents: int | None,
            price_list: PriceList | None = None, registered_price_cents: int | None = None) -> ChargeAmounts:
    price = terms.value_per_unit_cents if unit_price_cents is None else unit_price_cents
    amount, own_share, client_fee = kind_amounts(terms, units_x100, price)
    return ChargeAmounts(
        unit_price_cents=price,
        amount_cents=amount,
        own_share_cents=own_share,
        price_registered=price_list is not None,
        registered_price_cents=registered_price_cents,
        price_list_id=price_list.price_list_id if price_list else None,
        client_fee_cents=client_fee,
    )


def validate_charge(terms: VoucherTerms | None, approval: ApprovalState | None, units_used_x100: int,
                    req: ChargeRequest, today: date, price_lists: list[PriceList] = (),
                    money_used_cents: int = 0, charge_deadline_days: int | None = None) -> ChargeAmounts:
    """Accept a charge or raise the first reason it is refused. ``price_lists`` are the provider's
    lists for the voucher's funder and category (any of them; the one in force is chosen here);
    ``charge_deadline_days`` the funder's charging deadline (None: ``DEFAULT_CHARGE_DEADLINE_DAYS``)."""
    if terms is None:
        raise NotFound("voucher", retryable=True,
                       hint="a voucher issued moments ago may not have reached payments yet; retry shortly")
    budget = terms.kind == PERSONAL_BUDGET  # any provider approved for one of its categories may charge it
    if terms.provider_id is None and not budget:
        raise DomainError("provider_not_chosen", "the client has not chosen a provider for this voucher")
    if terms.provider_id != req.provider_id and not budget:
        raise DomainError("not_chosen_provider", "the voucher's client has chosen another provider")
    charge_category(terms, req.category)
    check_approval_covers(approval, req.service_date)
    if req.units_x100 <= 0:
        raise DomainError("invalid_units", "units must be positive")
    if req.unit_price_cents is not None and req.unit_price_cents <= 0:
        raise DomainError("invalid_price", "unit price must be positive")
    if req.service_date > today:
        raise DomainError("service_date_in_future", "a service can be charged only once delivered")
    if not terms.valid_from <= req.service_date <= terms.valid_until:
        raise DomainError("service_date_outside_validity", "the service date is outside the voucher's validity",
                          valid_from=terms.valid_from.isoformat(), valid_until=terms.valid_until.isoformat())
    check_charge_deadline(req.service_date, today, charge_deadline_days)
    if req.tariff is not None and req.tariff not in TARIFFS:
        raise DomainError("unknown_tariff", "unknown tariff", tariffs=list(TARIFFS))
    price_list = price_in_force(list(price_lists), req.service_date)
    price, registered = unit_price(terms, price_list, req)
    left = terms.units_per_period_x100 - units_used_x100
    if req.units_x100 > left and not budget:
        raise DomainError("units_exceeded", "more units than are left on the voucher for this period",
                          units_left=str(from_hundredths(max(left, 0))))
    charged = amounts(terms, req.units_x100, price, price_list, registered)
    if budget:
        check_budget(terms, charged.amount_cents, money_used_cents)
    return charged


# ------------------------------------------------------------------ settlement
@dataclass(frozen=True)
class SettlementFigures:
    gross_cents: int
    fee_cents: int
    net_cents: int
    charge_fees: list[int]  # per charge, in the order given; they sum to fee_cents exactly


def fee_rate_for(funder_rate: str | None, default_rate: Decimal) -> Decimal:
    """The fee rate of a funder's settlements: its contract's (from ``FunderRegistered``), else the
    operator's default for funders payments has not heard of."""
    if funder_rate is None:
        return default_rate
    rate = Decimal(funder_rate)
    if not fee_rate_in_range(rate):
        raise AssertionError(f"a fee rate out of range reached settlement: {funder_rate}")
    return rate


def fee_rate_in_range(rate: Decimal) -> bool:
    return rate.is_finite() and Decimal(0) <= rate < 1


def settle(charge_amounts: list[int], rate: Decimal) -> SettlementFigures:
    """Fee on the settlement's gross (rounded once), spread over its charges to the cent."""
    gross = sum(charge_amounts)
    fee = fee_cents(gross, rate)
    return SettlementFigures(gross, fee, gross - fee, allocate(fee, charge_amounts))


# ------------------------------------------------------------------ ledger postings
def funder_account(funder_id: str) -> str:
    return f"funder:{funder_id}:voucher_spend"


def provider_payable(provider_id: str) -> str:
    return f"provider:{provider_id}:payable"


def provider_payout_due(provider_id: str) -> str:
    return f"provider:{provider_id}:payout_due"


FEE_REVENUE = "operator:fee_revenue"
#: the operator's client-funds account at the bank: funders pay in, payouts go out, recoveries come back
BANK = "operator:bank"


def provider_recovery_due(provider_id: str) -> str:
    return f"provider:{provider_id}:recovery_due"


def payout_executed_postings(provider_id: str, net_cents: int) -> list[tuple[str, int]]:
    """The bank paid the settlement's payout: what was due to the provider has left the bank account."""
    return balanced([(provider_payout_due(provider_id), net_cents), (BANK, -net_cents)])


def funder_payment_postings(funder_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """A funder's payment came in: it owes that much less."""
    return balanced([(BANK, amount_cents), (funder_account(funder_id), -amount_cents)])


def recovery_claim_postings(provider_id: str, amount_cents: int, fee_cents: int, net_cents: int
                            ) -> list[tuple[str, int]]:
    """Corrections no payout could offset are claimed back: the provider's receivable leaves its payable
    (where the next settlement would have cleared it) for a claim of the net; the fee is given back."""
    return balanced([(provider_payable(provider_id), -amount_cents), (FEE_REVENUE, fee_cents),
                     (provider_recovery_due(provider_id), net_cents)])


def recovery_repayment_postings(provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    return balanced([(BANK, amount_cents), (provider_recovery_due(provider_id), -amount_cents)])


def balanced(postings: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if sum(amount for _, amount in postings) != 0:
        raise AssertionError(f"unbalanced postings: {postings}")
    return postings


def charge_postings(funder_id: str, provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """The funder owes the provider for an accepted charge."""
    return balanced([(funder_account(funder_id), amount_cents), (provider_payable(provider_id), -amount_cents)])


def settlement_postings(provider_id: str, figures: SettlementFigures) -> list[tuple[str, int]]:
    """The provider's payable is cleared: the fee to the operator, the net to be paid out."""
    return balanced([
        (provider_payable(provider_id), figures.gross_cents),
        (FEE_REVENUE, -figures.fee_cents),
        (provider_payout_due(provider_id), -figures.net_cents),
    ])


# ------------------------------------------------------------------ corrections after settlement
REVERSAL = "reversal"
PARTIAL = "partial"
#: why a settled charge is corrected (codes only: no free text, so no personal data can enter)
CORRECTION_REASONS = ("service_not_delivered", "wrong_units", "wrong_price", "duplicate_charge", "funder_decision",
                      "other")


@dataclass(frozen=True)
class ChargeFigures:
    """A settled charge's figures: as accepted and settled, or as they stand after corrections."""

    units_x100: int
    amount_cents: int
    own_share_cents: int
    client_fee_cents: int | None
    fee_cents: int

    def minus(self, other: "ChargeFigures") -> "ChargeFigures":
        return ChargeFigures(self.units_x100 - other.units_x100, self.amount_cents - other.amount_cents,
                             self.own_share_cents - other.own_share_cents,
                             None if self.client_fee_cents is None else
                             self.client_fee_cents - (other.client_fee_cents or 0),
                             self.fee_cents - other.fee_cents)


@dataclass(frozen=True)
class Correction:
    """What a correction removes from a charge (positive figures), and the charge after it."""

    kind: str
    removed: ChargeFigures
    after: ChargeFigures

    @property
    def net_cents(self) -> int:
        """What the provider owes back: the amount removed less the fee given back."""
        return self.removed.amount_cents - self.removed.fee_cents


def _part(total: int | None, numerator: int, denominator: int) -> int | None:
    if total is None:
        return None
    if denominator == 0:
        return 0
    return round_cents(Decimal(total) * numerator / denominator)


def correct(original: ChargeFigures, now: ChargeFigures, *, reversal: bool, units_x100: int | None = None,
            amount_cents: int | None = None) -> Correction:
    """A correction of a settled charge: the whole of it (``reversal``), or the units (and with them the
    amount, own share and client fee, in proportion to the original charge) and/or the funder's amount
    lowered to what is given. The fee given back is the charge's fee in proportion to the amount that
    remains, so that a reversal gives back all of it. ``now`` is the charge after earlier corrections."""
    if now.units_x100 == 0 and now.amount_cents == 0:
        raise DomainError("charge_already_reversed", "the charge has been reversed already: nothing is left to "
                          "correct", status_code=409)
    if reversal:
        if units_x100 is not None or amount_cents is not None:
            raise DomainError("invalid_request", "a reversal takes neither units nor an amount")
        after = ChargeFigures(0, 0, 0, None if original.client_fee_cents is None else 0, 0)
        return Correction(REVERSAL, now.minus(after), after)
    if units_x100 is None and amount_cents is None:
        raise DomainError("invalid_request", "a correction gives the units or the amount the charge should have "
                          "been, or is a reversal")
    new_units = now.units_x100 if units_x100 is None else units_x100
    if new_units < 0 or (amount_cents is not None and amount_cents < 0):
        raise DomainError("invalid_request", "units and amount cannot be negative")
    if new_units > now.units_x100:
        raise DomainError("correction_increases_charge", "a correction may only lower the charge: charge more as a "
                          "new charge", units_now=str(from_hundredths(now.units_x100)))
    if units_x100 is None:
        by_units = ChargeFigures(now.units_x100, now.amount_cents, now.own_share_cents, now.client_fee_cents, 0)
    else:
        by_units = ChargeFigures(new_units, _part(original.amount_cents, new_units, original.units_x100),
                                 _part(original.own_share_cents, new_units, original.units_x100),
                                 _part(original.client_fee_cents, new_units, original.units_x100), 0)
    new_amount = by_units.amount_cents if amount_cents is None else amount_cents
    if new_amount > min(by_units.amount_cents, now.amount_cents):
        raise DomainError("correction_increases_charge", "a correction may only lower the charge: charge more as a "
                          "new charge", amount_cents_now=min(by_units.amount_cents, now.amount_cents))
    if new_units == now.units_x100 and new_amount == now.amount_cents:
        raise DomainError("correction_changes_nothing", "the corrected figures are the charge's figures already")
    own_share = min(by_units.own_share_cents, now.own_share_cents)
    client_fee = (None if by_units.client_fee_cents is None else min(by_units.client_fee_cents, now.client_fee_cents))
    fee = min(_part(original.fee_cents, new_amount, original.amount_cents), now.fee_cents)
    after = ChargeFigures(new_units, new_amount, own_share, client_fee, fee)
    kind = REVERSAL if (new_units, new_amount) == (0, 0) else PARTIAL
    return Correction(kind, now.minus(after), after)


def correction_postings(funder_id: str, provider_id: str, amount_cents: int) -> list[tuple[str, int]]:
    """The charge's posting reversed for the amount removed: the funder owes the provider that much less
    (the provider's payable turns into a receivable the next settlement clears)."""
    return balanced([(funder_account(funder_id), -amount_cents), (provider_payable(provider_id), amount_cents)])


@dataclass(frozen=True)
class PendingCorrection:
    id: str
    amount_cents: int
    fee_cents: int

    @property
    def net_cents(self) -> int:
        return self.amount_cents - self.fee_cents


@dataclass(frozen=True)
class OffsetSettlement:
    """A settlement's figures with the corrections it offsets: gross, fee and net are the charges' less the
    corrections'; ``offset`` the corrections taken (the others carry forward)."""

    figures: SettlementFigures
    offset: list[PendingCorrection] = field(default_factory=list)


def settle_with_corrections(charge_amounts: list[int], rate: Decimal,
                            pending: list[PendingCorrection]) -> OffsetSettlement:
    """The charges settled as ``settle`` does, less the provider's pending corrections with the funder, in
    the order given, as long as the net stays at or above zero: a correction that would make it negative
    waits (with those after it) for a later settlement, so a payout is never negative."""
    charges = settle(charge_amounts, rate)
    net, taken = charges.net_cents, []
    for c in pending:
        if net - c.net_cents < 0:
            break
        net -= c.net_cents
        taken.append(c)
    gross = charges.gross_cents - sum(c.amount_cents for c in taken)
    fee = charges.fee_cents - sum(c.fee_cents for c in taken)
    return OffsetSettlement(SettlementFigures(gross, fee, gross - fee, charges.charge_fees), taken)
