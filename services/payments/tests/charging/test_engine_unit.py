"""The charge engine's rules without a database (a fake unit of work, as cosmicpython's
``tests/unit/test_handlers.py``): ``engine.charge_lines`` with a store that keeps its vouchers, approvals,
choices and charges in memory. What a batch's earlier lines accepted counts for its later ones; a batch
that fails writes nothing; the voucher's kinds and life cycle decide the amounts and refusals; and
charging lines one at a time or all at once gives the same answers and the same ledger (hypothesis)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.charging import domain, engine, lifecycle
from payments.ledger.postings import charge_postings
from seteli_shared.approvals import ApprovalState
from seteli_shared.auth import Principal, Role
from seteli_shared.clock import FixedClock
from seteli_shared.uow import AbstractUnitOfWork

JAN1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLOCK = FixedClock(datetime(2026, 6, 20, 9, 0, tzinfo=timezone.utc))
P = "p1"
PRINCIPAL = Principal("t:provider_charger", frozenset({Role.PROVIDER_CHARGER}), provider_id=P)


def terms(**kw) -> domain.VoucherTerms:  # noqa: ANN003
    base = dict(funder_id="091", category="home_care", units_per_period_x100=1000, period="validity",
                value_per_unit_cents=2500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31), provider_id=P)
    return domain.VoucherTerms(**{**base, **kw})


@dataclass
class FakeWorld:
    """What a fake store holds: the projections and the committed charges."""

    vouchers: dict[str, engine.VoucherOnFile] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    approvals: dict[tuple[str, str], ApprovalState] = field(default_factory=dict)
    choices: dict[str, list[lifecycle.Choice]] = field(default_factory=dict)
    charges: list[engine.NewCharge] = field(default_factory=list)

    def voucher(self, voucher_id: str, code: str | None = None, **kw) -> None:  # noqa: ANN003
        t = terms(**kw.pop("terms", {}))
        self.vouchers[voucher_id] = engine.VoucherOnFile(voucher_id, t, **kw)
        self.approvals.setdefault((t.funder_id, t.category), ApprovalState(approval_id="a", approved_at=JAN1))
        if code is not None:
            self.codes[code] = voucher_id

    def ledger(self) -> tuple[dict[str, int], Counter]:
        """Each account's balance and number of entries."""
        balances: dict[str, int] = {}
        entries: Counter = Counter()
        for c in self.charges:
            for account, amount in charge_postings(c.funder_id, c.req.provider_id, c.amounts.amount_cents):
                balances[account] = balances.get(account, 0) + amount
                entries[account] += 1
        return balances, entries


class FakeChargeStore:
    def __init__(self, world: FakeWorld):
        self.world = world
        self.staged: list[engine.NewCharge] = []

    async def load(self, provider_id: str, lines: list[engine.Line]) -> engine.ChargeState:
        w = self.world
        state = engine.ChargeState(vouchers=dict(w.vouchers), approvals=dict(w.approvals),
                                   choices={k: list(v) for k, v in w.choices.items()})
        for line in lines:
            vid = line.voucher_id if line.voucher_id is not None else w.codes.get(line.voucher_code)
            if vid is not None:
                state.voucher_of[line.index] = vid
        for c in w.charges:
            if c.req.provider_id == provider_id:
                state.earlier[c.provider_reference] = engine.Earlier(c.id, c.voucher_id, c.req.service_date,
                                                                     c.req.units_x100, c.req.tariff,
                                                                     c.amounts.unit_price_cents)
            state.used.add_day(c.voucher_id, c.req.service_date, c.req.units_x100, c.amounts.amount_cents)
        return state

    async def add(self, principal: Principal, charges: list[engine.NewCharge]) -> None:
        self.staged += charges


class FakeUnitOfWork(AbstractUnitOfWork):
    def __init__(self, world: FakeWorld):
        self.world = world

    async def _begin(self) -> None:
        self.charges = FakeChargeStore(self.world)

    async def _commit(self) -> None:
        self.world.charges += self.charges.staged

    async def rollback(self) -> None:
        self.charges.staged = []


def req(day: date = date(2026, 6, 18), units_x100: int = 100, **kw) -> domain.ChargeRequest:  # noqa: ANN003
    return domain.ChargeRequest(P, day, units_x100, kw.pop("price", None), **kw)


async def charge(world: FakeWorld, *lines: engine.Line) -> list[tuple[str, str | None]]:
    out = await engine.charge_lines(FakeUnitOfWork(world), CLOCK, PRINCIPAL, P, list(lines))
    return [(out[x.index].status, out[x.index].reason) for x in lines]


def line(i: int, voucher: str | None, ref: str, r: domain.ChargeRequest, code: str | None = None) -> engine.Line:
    return engine.Line(i, voucher, code, ref, r)


async def test_what_a_batch_accepts_counts_for_its_later_lines():
    world = FakeWorld()
    world.voucher("v1")  # 10 units
    got = await charge(world, line(0, "v1", "a", req(units_x100=600)), line(1, "v1", "b", req(units_x100=500)),
                       line(2, "v1", "c", req(units_x100=400)), line(3, "v1", "a", req(units_x100=600)),
                       line(4, "v1", "a", req(units_x100=100)))
    assert got == [("accepted", None), ("refused", "units_exceeded"), ("accepted", None), ("repeated", None),
                   ("refused", "duplicate_reference")]
    assert [c.provider_reference for c in world.charges] == ["a", "c"]


async def test_a_batch_that_fails_to_be_written_leaves_nothing():
    class Broken(FakeUnitOfWork):
        async def _commit(self) -> None:
            raise ConnectionError("the database went away")

    world = FakeWorld()
    world.voucher("v1")
    with pytest.raises(ConnectionError):
        await engine.charge_lines(Broken(world), CLOCK, PRINCIPAL, P, [line(0, "v1", "a", req())])
    assert world.charges == []
    assert await charge(world, line(0, "v1", "a", req())) == [("accepted", None)]


async def test_a_code_finds_only_the_callers_voucher_and_an_unknown_one_says_it_may_be_retried():
    world = FakeWorld()
    world.voucher("v1", code="ABC")
    out = await engine.charge_lines(FakeUnitOfWork(world), CLOCK, PRINCIPAL, P, [
        line(0, None, "a", req(), code="ABC"), line(1, None, "b", req(), code="XYZ")])
    assert (out[0].status, out[1].reason, out[1].error.details["retryable"]) == ("accepted", "voucher_not_found", True)
    assert out[1].details == {"retryable": True}, "a line's answer carries no hint meant for one request"


async def test_each_kind_of_voucher_pays_its_own_amounts():
    world = FakeWorld()
    world.voucher("service")
    world.voucher("client", terms=dict(kind=domain.CLIENT_VOUCHER, value_per_unit_cents=2800,
                                       max_value_per_unit_cents=2800, client_fee_cents=500))
    world.voucher("budget", terms=dict(kind=domain.PERSONAL_BUDGET, units_per_period_x100=0, value_per_unit_cents=0,
                                       budget_cents=10000, categories=("home_care", "cleaning")))
    world.approvals[("091", "cleaning")] = ApprovalState(approval_id="c", approved_at=JAN1)
    lines = [line(0, "service", "s", req(units_x100=200, price=3000)), line(1, "client", "c", req(units_x100=200,
                                                                                                  price=3000)),
             line(2, "budget", "b", req(units_x100=200, price=4000, category="cleaning")),
             line(3, "budget", "b2", req(units_x100=100, price=4000))]
    assert await charge(world, *lines) == [("accepted", None)] * 3 + [("refused", "budget_exceeded")]
    amounts = {c.provider_reference: (c.amounts.amount_cents, c.amounts.own_share_cents, c.amounts.client_fee_cents)
               for c in world.charges}
    assert amounts == {"s": (5000, 1000, None), "c": (5600, 0, 1000), "b": (8000, 0, None)}


async def test_the_voucher_life_cycle_decides_before_the_rules():
    world = FakeWorld()
    world.voucher("rev", revoked_at=datetime(2026, 6, 12, tzinfo=timezone.utc), revoked_from=date(2026, 6, 10))
    world.voucher("old", revoked_at=datetime(2026, 5, 1, tzinfo=timezone.utc), revoked_from=date(2026, 5, 1))
    world.voucher("switch")
    world.choices["switch"] = [lifecycle.Choice(P, date(2026, 1, 1), JAN1),
                               lifecycle.Choice("p2", date(2026, 6, 1), datetime(2026, 6, 1, tzinfo=timezone.utc))]
    world.voucher("carry", terms=dict(period="month", units_per_period_x100=200), carry_over=True)
    got = await charge(world, line(0, "rev", "r1", req(date(2026, 6, 9))), line(1, "rev", "r2", req(date(2026, 6, 15))),
                       line(2, "old", "o1", req(date(2026, 4, 15))), line(3, "switch", "w1", req(date(2026, 5, 29))),
                       line(4, "switch", "w2", req(date(2026, 6, 10))),
                       # May's two unused units carry into June: four units in June
                       line(5, "carry", "k1", req(date(2026, 6, 18), units_x100=400)))
    assert got == [("accepted", None), ("refused", "service_after_revocation"), ("refused", "revoked_grace_passed"),
                   ("accepted", None), ("refused", "provider_switched"), ("accepted", None)]


# ------------------------------------------------------------------ one at a time or all at once
VOUCHERS = ("v1", "v2", "v3")
lines_strategy = st.lists(st.tuples(
    st.sampled_from(VOUCHERS + ("v-none",)),            # the voucher (one unknown)
    st.sampled_from([f"r{i}" for i in range(8)]),        # references repeat: repeated and duplicate lines
    st.integers(min_value=1, max_value=25),              # a day of June (after the 20th: in the future)
    st.sampled_from([25, 50, 100, 150, 300]),            # units x 100
    st.sampled_from([None, 2000, 2500, 3000]),           # the price sent
), min_size=1, max_size=25)


def _world() -> FakeWorld:
    world = FakeWorld()
    for n, vid in enumerate(VOUCHERS, start=1):
        world.voucher(vid, terms=dict(units_per_period_x100=200 * n, period="month"))
    return world


def _lines(drawn: list) -> list[engine.Line]:
    return [line(i, vid, ref, req(date(2026, 6, day), units_x100=units, price=price))
            for i, (vid, ref, day, units, price) in enumerate(drawn)]


def _answers(outcomes: list[engine.Outcome], lines: list[engine.Line]) -> list[tuple]:
    """Each line's outcome and reason, a repeated line naming the line whose charge it repeats."""
    made = {o.charge_id: n for n, o in enumerate(outcomes) if o.status == engine.ACCEPTED}
    return [(o.status, o.reason, made.get(o.charge_id) if o.status == engine.REPEATED else None) for o in outcomes]


@settings(max_examples=300, deadline=None)
@given(lines_strategy)
async def test_one_at_a_time_and_all_at_once_give_the_same_answers_and_the_same_ledger(drawn):  # noqa: ANN001
    lines = _lines(drawn)
    apart, together = _world(), _world()
    one_by_one = [(await engine.charge_lines(FakeUnitOfWork(apart), CLOCK, PRINCIPAL, P, [x]))[x.index]
                  for x in lines]
    at_once = await engine.charge_lines(FakeUnitOfWork(together), CLOCK, PRINCIPAL, P, lines)
    assert _answers(one_by_one, lines) == _answers([at_once[x.index] for x in lines], lines)
    assert apart.ledger() == together.ledger()


@pytest.mark.parametrize("change", [None, "revoked", "approval_suspended", "chosen_away", "deadline"])
async def test_a_chunk_ruled_ahead_is_taken_only_if_the_rules_read_the_same_there(change):  # noqa: ANN001
    """``rule_ahead`` rules a chunk on the state the chunk before left (``Carry``); ``charge_lines`` takes its
    outcomes only when the state it loads gives the rules the same inputs: a voucher revoked, an approval
    suspended, a switch of provider or a funder's deadline changed after the chunk before makes it rule again,
    and the answers are the ones the rules give on what it loaded."""
    from dataclasses import replace as copy_of

    world = FakeWorld()
    world.voucher("v1")  # ten units
    carry = engine.Carry()
    first = [engine.Line(0, "v1", None, "a", req(units_x100=300)), engine.Line(1, "v1", None, "b", req(units_x100=300))]
    out = await engine.charge_lines(FakeUnitOfWork(world), CLOCK, PRINCIPAL, P, first, carry=carry)
    assert [out[i].status for i in (0, 1)] == ["accepted", "accepted"] and carry.ruled.is_set()
    second = [engine.Line(0, "v1", None, "c", req(units_x100=300)), engine.Line(1, "v1", None, "d", req(units_x100=300)),
              engine.Line(2, "v1", None, "a", req(units_x100=300))]
    ahead = await engine.rule_ahead(carry.take(), second, CLOCK.today(), CLOCK.now)
    assert [(ahead.outcomes[i].status, ahead.outcomes[i].reason) for i in range(3)] == [
        ("accepted", None), ("refused", "units_exceeded"), ("repeated", None)]
    if change == "revoked":
        world.vouchers["v1"] = copy_of(world.vouchers["v1"], revoked_at=JAN1, revoked_from=date(2026, 6, 1))
    elif change == "approval_suspended":
        world.approvals[("091", "home_care")] = ApprovalState(approval_id="a", approved_at=JAN1, status="suspended",
                                                              not_in_force_from=date(2026, 6, 1), changed_at=JAN1)
    elif change == "chosen_away":
        world.choices["v1"] = [lifecycle.Choice("p2", date(2026, 6, 1), JAN1)]
    fake = FakeUnitOfWork(world)
    if change == "deadline":
        original = FakeChargeStore.load

        async def load(self, provider_id, lines):  # noqa: ANN001, ANN202
            state = await original(self, provider_id, lines)
            state.deadlines["091"] = 1  # one day: the 18th's services are late on the 20th
            return state
        FakeChargeStore.load = load
    try:
        out = await engine.charge_lines(fake, CLOCK, PRINCIPAL, P, second, ahead=ahead)
        assert (out is ahead.outcomes) == (change is None)
        if change is not None:  # refused, for the reason a line charged now is
            fresh = await engine.charge_lines(FakeUnitOfWork(world), CLOCK, PRINCIPAL, P, [
                engine.Line(0, "v1", None, "e", req(units_x100=300))])
            assert out[0].status == "refused" and (fresh[0].status, fresh[0].reason) == (out[0].status, out[0].reason)
    finally:
        if change == "deadline":
            FakeChargeStore.load = original
