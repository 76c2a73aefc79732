"""The charging rules, pure (no I/O): a charge checked against the voucher, the approval, the price
lists and the funder's deadline, each refusal a machine-readable reason; its amounts by the voucher's kind.
``engine.decide`` applies them to a batch of lines (a single charge is a batch of one)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timedelta

from seteli_shared import periods
from seteli_shared.approvals import REVOKED, SUSPENDED, ApprovalState
from seteli_shared.errors import DomainError, NotFound
from seteli_shared.money import from_hundredths, units_amount_cents

#: a charge's status: accepted (owed to its provider), settled (paid), cancelled by its provider before settlement
ACCEPTED = "accepted"
SETTLED = "settled"
CANCELLED = "cancelled"


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


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    provider_id: str
    service_date: date
    units_x100: int
    unit_price_cents: int | None  # the provider's price per unit; defaults to the registered price or voucher value
    tariff: str | None = None  # weekday | weekday_evening | saturday | sunday: which price of the list
    category: str | None = None  # a personal budget's: which of its categories (default: the voucher's)


@dataclass(frozen=True, slots=True)
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
    return _kind_amounts(terms.kind, terms.value_per_unit_cents, terms.max_value_per_unit_cents,
                         terms.client_fee_cents, units_x100, price)


@lru_cache(maxsize=4096)
def _kind_amounts(kind: str, value_per_unit_cents: int, max_value_per_unit_cents: int | None,
                  client_fee_cents: int | None, units_x100: int, price: int) -> tuple[int, int, int | None]:
    """``kind_amounts`` of the terms that count, worked out once per distinct set (a bulk's lines repeat them)."""
    units = from_hundredths(units_x100)
    if kind == CLIENT_VOUCHER:
        cap = max_value_per_unit_cents or value_per_unit_cents
        return (units_amount_cents(units, min(price, cap)), 0,
                units_amount_cents(units, client_fee_cents or 0))
    if kind == PERSONAL_BUDGET:
        return units_amount_cents(units, price), 0, None
    return (units_amount_cents(units, min(price, value_per_unit_cents)),
            units_amount_cents(units, max(price - value_per_unit_cents, 0)), None)


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


@lru_cache(maxsize=4096)
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
    return _amounts(terms.kind, terms.value_per_unit_cents, terms.max_value_per_unit_cents, terms.client_fee_cents,
                    units_x100, price, None if price_list is None else price_list.price_list_id,
                    price_list is not None, registered_price_cents)


@lru_cache(maxsize=4096)
def _amounts(kind: str, value_per_unit_cents: int, max_value_per_unit_cents: int | None,
             client_fee_cents: int | None, units_x100: int, price: int, price_list_id: str | None,
             price_registered: bool, registered_price_cents: int | None) -> ChargeAmounts:
    """``amounts`` of the values that count, made once per distinct set (a bulk's lines repeat them; the amounts
    are frozen, so one object serves every charge that has them)."""
    amount, own_share, client_fee = _kind_amounts(kind, value_per_unit_cents, max_value_per_unit_cents,
                                                  client_fee_cents, units_x100, price)
    return ChargeAmounts(
        unit_price_cents=price,
        amount_cents=amount,
        own_share_cents=own_share,
        price_registered=price_registered,
        registered_price_cents=registered_price_cents,
        price_list_id=price_list_id,
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


