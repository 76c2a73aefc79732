"""The charge engine: the one place a charge is decided. A single ``POST /charges`` is a batch of one, a JSON
bulk and a streamed CSV file are batches of up to ``intake.CHUNK_LINES`` lines; all go through
``charge_lines``:

1. the unit of work's store loads, in a few set-based statements, the state the rules need for the whole
   batch (``ChargeState``): the vouchers named (by id, or by the code the client gave the provider), locked,
   the earlier charges with the lines' provider references, the units and money charged per voucher and
   service date, the approvals, price lists, provider choices and the funders' charging deadlines;
2. ``decide`` (pure: no I/O, no clock of its own) takes the lines one after another through the rules
   (``domain``, ``lifecycle``): what a line accepts counts for the later lines of its voucher, and a provider
   reference accepted earlier in the batch answers ``repeated`` (or ``duplicate_reference``) to a later line;
3. the store writes the accepted charges with their ledger transactions, entries, ``ChargeAccepted`` events
   and audit rows, and the unit of work commits. A store that ``streams`` (``store.SessionChargeStore`` on
   PostgreSQL) takes the accepted charges as ``decisions`` reaches them (``add_stream``), so that the rules run
   while the database writes; the outcomes are ``decide``'s either way.

A bulk's next chunk may be ruled while the chunk before it is still being written (``rule_ahead``, on the state
that chunk's rules left: ``Carry``); ``charge_lines`` takes those outcomes (``Ahead``) only if the state it loads
under the chunk's locks gives the rules the same inputs (``rule_inputs``), else the rules run again on it.

The stores differ only in how they reach the database (``store.SessionChargeStore``: set-based statements and
``COPY`` in a transaction; ``fast_path``: a batch of one on PostgreSQL in two statements): the rules are this
module's, whichever store loaded the state."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Callable, Iterator, Protocol

from seteli_shared import codes, periods
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.ids import new_id
from seteli_shared.uow import AbstractUnitOfWork

from ..metrics import count_charges
from . import domain, lifecycle
from .state import (ChargeState, Earlier, Known, Line, NewCharge, Outcome, Used,  # noqa: F401 (engine.Line, ...)
                    VoucherOnFile)

ACCEPTED, REPEATED, REFUSED = "accepted", "repeated", "refused"


def code_not_found() -> NotFound:
    """What a voucher code answers that is unknown, or known but not given to this provider: nothing tells
    a provider whether a code it was not given exists."""
    return NotFound("voucher", retryable=True, hint="check the voucher code with the client; a voucher issued "
                    "or chosen moments ago may not have reached payments yet")


# ------------------------------------------------------------------ the rules over a batch, pure
def decide(lines: list[Line], state: ChargeState, today: date,
           now: Callable[[], datetime]) -> tuple[dict[int, Outcome], list[NewCharge]]:
    """Each line's outcome by its index, and the charges to write, line after line: what a line accepts
    counts for the lines after it (units and money used, its provider reference)."""
    out: dict[int, Outcome] = {}
    accepted: list[NewCharge] = []
    for index, outcome in decisions(lines, state, today, now):
        out[index] = outcome
        if outcome.charge is not None:
            accepted.append(outcome.charge)
    return out, accepted


def decisions(lines: list[Line], state: ChargeState, today: date,
              now: Callable[[], datetime]) -> Iterator[tuple[int, Outcome]]:
    """``decide`` one line at a time: each line's index and outcome, in order, as the rules reach it."""
    accepted: list[NewCharge] = []
    for line in lines:
        voucher_id = state.voucher_of.get(line.index)
        if voucher_id is None:
            yield line.index, Outcome(REFUSED, error=code_not_found())
            continue
        try:
            outcome = _one(line, voucher_id, state, today, now, accepted)
        except DomainError as e:
            outcome = Outcome(REFUSED, error=e)
        yield line.index, outcome


def _one(line: Line, voucher_id: str, state: ChargeState, today: date, now: Callable[[], datetime],
         accepted: list[NewCharge]) -> Outcome:
    """One line: the category, then a repeated reference, then the voucher's life cycle, then the rules."""
    req = line.req
    voucher = state.vouchers.get(voucher_id)
    terms = None if voucher is None else voucher.terms
    category = None if terms is None else domain.charge_category(terms, req.category)
    before = state.earlier.get(line.provider_reference)
    if before is not None:
        return _repeated(before, voucher_id, req)
    units_used = money_used = 0
    approval, price_lists, deadline_days = None, [], None
    if terms is not None:
        start, end, previous = _periods(state, voucher_id, terms, req.service_date)
        units_used, money_used = state.used.period(voucher_id, start, end)
        previous_used = state.used.period(voucher_id, *previous)[0] if previous is not None else 0
        approval = state.approvals.get((terms.funder_id, category))
        price_lists = _in_force(state, terms.funder_id, category, req.service_date)
        deadline_days = state.deadlines.get(terms.funder_id)
        terms = _life_cycle(state, voucher, terms, req, today, previous_used)
    amounts = domain.validate_charge(terms, approval, units_used, req, today, price_lists,
                                     money_used_cents=money_used, charge_deadline_days=deadline_days)
    charge = NewCharge(new_id(), voucher_id, terms.funder_id, category, line.provider_reference, req, amounts, now())
    accepted.append(charge)
    state.used.accept(voucher_id, req.service_date, req.units_x100, amounts.amount_cents)
    state.earlier[line.provider_reference] = Earlier(charge.id, voucher_id, req.service_date, req.units_x100,
                                                     req.tariff, amounts.unit_price_cents)
    return Outcome(ACCEPTED, charge_id=charge.id, charge=charge)


def _periods(state: ChargeState, voucher_id: str, terms: domain.VoucherTerms,
             day: date) -> tuple[date, date, tuple[date, date] | None]:
    """The period a charge on ``day`` uses and the one before it (``domain.period_bounds``,
    ``periods.previous_period``), worked out once per voucher and day in a batch."""
    key = ("periods", voucher_id, day)
    found = state.memo.get(key)
    if found is None:
        start, end = domain.period_bounds(terms, day)
        found = state.memo[key] = (start, end, periods.previous_period(terms.period, terms.valid_from,
                                                                       terms.valid_until, day))
    return found


def _in_force(state: ChargeState, funder_id: str, category: str, day: date) -> list[domain.PriceList]:
    """The provider's price list in force on ``day`` for the funder and category (``domain.price_in_force``) as
    the one list the rules choose from, or none: what they choose from all the lists taking effect by ``day``,
    worked out once per funder, category and day in a batch."""
    key = ("price_list", funder_id, category, day)
    found = state.memo.get(key)
    if found is None:
        chosen = domain.price_in_force(state.price_lists.get((funder_id, category), ()), day)
        found = state.memo[key] = [] if chosen is None else [chosen]
    return found


def _life_cycle(state: ChargeState, voucher: VoucherOnFile, terms: domain.VoucherTerms, req: domain.ChargeRequest,
                today: date, previous_used_x100: int) -> domain.VoucherTerms:
    """``life_cycle_terms``, worked out once per voucher, service date, provider and (a voucher that carries
    units over) units used in the period before: its terms, or the refusal it raises, for every such line."""
    key = ("life_cycle", voucher.voucher_id, req.service_date, req.provider_id,
           previous_used_x100 if voucher.carry_over else None)
    found = state.memo.get(key)
    if found is None:
        try:
            found = life_cycle_terms(voucher, terms, req, today, state.choices.get(voucher.voucher_id, []),
                                     previous_used_x100)
        except DomainError as e:
            found = e
        state.memo[key] = found
    if isinstance(found, DomainError):
        raise found.with_traceback(None)
    return found


def _repeated(before: Earlier, voucher_id: str, req: domain.ChargeRequest) -> Outcome:
    """A provider reference charged before: the same charge again answers it, another is refused."""
    same = (before.voucher_id, before.service_date, before.units_x100, before.tariff) == (
        voucher_id, req.service_date, req.units_x100, req.tariff) and req.unit_price_cents in (
        None, before.unit_price_cents)
    if not same:
        raise Conflict("duplicate_reference", "this provider reference was already used for another charge",
                       charge_id=before.id)
    return Outcome(REPEATED, charge_id=before.id)


def life_cycle_terms(voucher: VoucherOnFile, terms: domain.VoucherTerms, req: domain.ChargeRequest, today: date,
                     choices: list[lifecycle.Choice], previous_used_x100: int) -> domain.VoucherTerms:
    """The voucher's terms for this charge after its life cycle: refused after a revocation (beyond the
    grace) or from a provider switched away from by the service date; the provider the service date
    belongs to as the chosen one; the period's units with what the previous month carried over."""
    lifecycle.check_revocation(voucher.revoked_at, voucher.revoked_from, req.service_date, today)
    lifecycle.check_chosen_on(choices, req.provider_id, req.service_date)
    provider = lifecycle.provider_on(choices, req.service_date) or terms.provider_id
    previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, req.service_date)
    carried = 0
    if voucher.carry_over and previous is not None and terms.units_per_period_x100 is not None:
        carried = periods.carried_in_x100(terms.units_per_period_x100, True, previous_used_x100)
    if provider == terms.provider_id and not carried:
        return terms  # nothing to change (the terms are frozen: the same object serves)
    return replace(terms, provider_id=provider, units_per_period_x100=(
        None if terms.units_per_period_x100 is None else terms.units_per_period_x100 + carried))


# ------------------------------------------------------------------ a bulk's next chunk, ruled ahead
def days_asked(lines: list[Line], state: ChargeState) -> tuple[date, date] | None:
    """The first and last service date whose units the lines' periods (and the periods before them) count (worked
    out once per voucher and service date: a bulk's lines repeat them)."""
    first = last = None
    voucher_of = state.voucher_of
    for vid, day in {(voucher_of.get(line.index), line.req.service_date) for line in lines}:
        voucher = state.vouchers.get(vid)
        terms = None if voucher is None else voucher.terms
        if terms is None:
            continue
        start, end = domain.period_bounds(terms, day)
        previous = periods.previous_period(terms.period, terms.valid_from, terms.valid_until, day)
        if previous is not None:
            start = min(start, previous[0])
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    return None if first is None else (first, last)


def rule_inputs(state: ChargeState, lines: list[Line], today: date) -> tuple:
    """Everything of ``state`` the rules read for ``lines`` (and the day): each line's voucher, those vouchers,
    the earlier charges with the lines' references, the vouchers' units and money per service date over the days
    the lines' periods count, their choices, and their funders' approvals, price lists and deadlines. Two states
    with equal inputs give every line the same outcome (``decide`` is a pure function of these)."""
    voucher_of, earlier = state.voucher_of, state.earlier
    named = [voucher_of.get(line.index) for line in lines]
    vids = sorted({v for v in named if v is not None})
    vouchers = tuple((vid, state.vouchers.get(vid)) for vid in vids)
    funders = sorted({v.terms.funder_id for _vid, v in vouchers if v is not None and v.terms is not None})
    days = days_asked(lines, state)
    first, last = days if days is not None else (date.max, date.min)
    return (  # compared with ``==`` only (lists and dicts compare by content)
        today, named, vouchers, {ref: earlier.get(ref) for ref in {line.provider_reference for line in lines}},
        tuple((vid, tuple(sorted((d, tuple(v)) for d, v in state.used.days.get(vid, {}).items() if first <= d <= last)))
              for vid in vids),
        tuple((vid, tuple(state.choices.get(vid, ()))) for vid in vids),
        tuple(sorted(((k, v) for k, v in state.approvals.items() if k[0] in funders), key=lambda kv: kv[0])),
        tuple(sorted(((k, tuple(v)) for k, v in state.price_lists.items() if k[0] in funders), key=lambda kv: kv[0])),
        tuple((f, state.deadlines.get(f)) for f in funders))


@dataclass
class Ahead:
    """A bulk's next chunk ruled while the chunk before it is still being written (``rule_ahead``): the outcomes
    and charges ``decide`` gave it on the state the chunk before left (``carried``: that chunk's own state after
    its rules), and the inputs the rules read there. ``charge_lines`` takes them only if the chunk's own state,
    loaded under its vouchers' locks, gives the rules the same inputs (``rule_inputs``): the outcomes are then
    the ones the rules would give it there, as if the chunks had run one after the other."""

    inputs: tuple
    outcomes: dict[int, Outcome]
    charges: list[NewCharge]
    state: ChargeState


class Carry:
    """What a bulk's chunks hand on: the state the last chunk's rules left (``state``, set by ``charge_lines`` as
    soon as its rules have ended, before its rows are written) and ``ruled``, set then; and what the last chunk
    that committed knew of its vouchers' units used (``known``, set once it has committed: the next chunk's
    store takes from it what has not changed since instead of reading it again)."""

    def __init__(self) -> None:
        self.state: ChargeState | None = None
        self.ruled = asyncio.Event()
        self.known: Known | None = None

    def set(self, state: ChargeState) -> None:
        self.state = state
        self.ruled.set()

    def take(self) -> ChargeState | None:
        """The state left by the chunk in flight, once: the next chunk's rules then own it."""
        state, self.state = self.state, None
        self.ruled.clear()
        return state


async def rule_ahead(carried: ChargeState, lines: list[Line], today: date,
                     now: Callable[[], datetime], every: int = 200) -> Ahead | None:
    """``decide`` of a chunk's lines on ``carried`` (the chunk before's state after its rules: the units it
    used, its references), letting the event loop run every ``every`` lines (the chunk before is being written
    meanwhile). A voucher named by a code is the one the code found before; a code or voucher the chunk before
    did not find counts as unknown (if it is known, the state the chunk loads differs, and its rules run again
    there). Only the earlier charges with these lines' references are kept."""
    carried.voucher_of = {}
    for line in lines:
        vid = line.voucher_id if line.voucher_id is not None else carried.codes.get(
            codes.normalise(line.voucher_code) or "")
        if vid is not None:
            carried.voucher_of[line.index] = vid
    refs = {line.provider_reference for line in lines}
    carried.earlier = {ref: e for ref, e in carried.earlier.items() if ref in refs}
    inputs = rule_inputs(carried, lines, today)
    outcomes: dict[int, Outcome] = {}
    charges: list[NewCharge] = []
    for n, (index, outcome) in enumerate(decisions(lines, carried, today, now), start=1):
        outcomes[index] = outcome
        if outcome.charge is not None:
            charges.append(outcome.charge)
        if n % every == 0:
            await asyncio.sleep(0)
    return Ahead(inputs, outcomes, charges, carried)


# ------------------------------------------------------------------ the use case
class ChargeStore(Protocol):
    """What the engine asks of the database, whichever way a store reaches it."""

    async def load(self, provider_id: str, lines: list[Line]) -> ChargeState:
        """The batch's state, read after the lines' vouchers are locked (or their versions noted)."""

    async def add(self, principal: Principal, charges: list[NewCharge]) -> None:
        """Write the accepted charges with their ledger, event and audit rows. (A store may also have
        ``streams`` true and ``add_stream(principal, charges)``, taking an iterator it reads to its end.)"""


class ChargeUnitOfWork(AbstractUnitOfWork):
    """A unit of work whose store is ``charges``."""

    charges: ChargeStore


async def charge_lines(uow: ChargeUnitOfWork, clock: Clock, principal: Principal, provider_id: str,
                       lines: list[Line], ahead: Ahead | None = None, carry: Carry | None = None) -> dict[int, Outcome]:
    """Charge a batch of lines for ``provider_id`` in one unit of work: each line's outcome by its index.
    A bulk's chunk may come ruled ahead (``ahead``): its outcomes are taken when the state loaded here gives the
    rules the same inputs, else the rules run here. ``carry`` is given the state the rules leave as soon as they
    have ended (the next chunk is ruled on it while this one is written)."""
    if not lines:
        return {}
    known = None
    async with uow:
        if carry is not None and getattr(uow.charges, "carries", False):
            state = await uow.charges.load(provider_id, lines, carry.known)
        else:
            state = await uow.charges.load(provider_id, lines)
        today = clock.today()
        if ahead is not None and rule_inputs(state, lines, today) == ahead.inputs:
            outcomes, charges = ahead.outcomes, ahead.charges
            if carry is not None:
                known = Known.of(state, charges)
                ahead.state.codes.update(state.codes)
                carry.set(ahead.state)
            if charges:
                if getattr(uow.charges, "streams", False):
                    await uow.charges.add_stream(principal, iter(charges))
                else:
                    await uow.charges.add(principal, charges)
        elif getattr(uow.charges, "streams", False):  # the rules run as the store writes what they accept
            outcomes: dict[int, Outcome] = {}

            def accepted() -> Iterator[NewCharge]:
                nonlocal known
                for index, outcome in decisions(lines, state, today, clock.now):
                    outcomes[index] = outcome
                    if outcome.charge is not None:
                        yield outcome.charge
                if carry is not None:
                    known = Known.of(state)
                    carry.set(state)

            await uow.charges.add_stream(principal, accepted())
        else:
            outcomes, charges = decide(lines, state, today, clock.now)
            if carry is not None:
                known = Known.of(state)
                carry.set(state)
            if charges:
                await uow.charges.add(principal, charges)
        await uow.commit()
    if carry is not None:
        carry.known = known  # what this chunk knew, now that it is committed (None: nothing to go on)
    count_charges(outcomes.values())  # committed: each line's outcome once (a retried unit of work counts once)
    return outcomes
