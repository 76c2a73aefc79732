"""The small-cell rule and the suppression over linked tables on their own (no database): the audit's
intervals against hand-worked ones and against ``linprog`` alone, the issue's month (which today's
per-table rule leaves open and the linked choice closes), random months of many categories and
providers, and the operator's statistics beside every funder's report."""
from __future__ import annotations

import itertools
import random
import time

import pytest

from reporting.samples import issue_month, month_of, operator_of, random_month
from reporting import disclosure, linked
from reporting.disclosure import (AMOUNT, CLIENTS, PROTECTED, SMALL_RANGE, TOO_NARROW, Cell, Relation, Tables, audit,
                                  bounds, protect)
from reporting.domain import MIN_CLIENTS, Period, Row, needs_suppression
from reporting.reports import ADDITIVE
from seteli_shared.errors import DomainError


@pytest.mark.parametrize("clients,hidden", [(0, False), (1, True), (4, True), (5, False), (348, False)])
def test_a_figure_of_fewer_than_five_clients_is_suppressed(clients, hidden):  # noqa: ANN001
    assert needs_suppression(clients) is hidden
    assert MIN_CLIENTS == 5


# ------------------------------------------------------------------ the audit's intervals
def one_table(values: dict[str, int], kind: str = CLIENTS) -> Tables:
    """Categories adding up to a total (``"total"``), each value its own base."""
    cells = {(n,): Cell(v, v, kind) for n, v in values.items()}
    return Tables(cells, [Relation(("total",), tuple((n,) for n in values if n != "total"))])


def test_intervals_of_one_sum_by_hand_and_by_linprog():
    t = one_table({"a": 3, "b": 7, "c": 40, "total": 50})
    for closed_form in (True, False):
        found, _ = bounds(t, {("a",), ("b",)}, closed_form=closed_form)
        assert found == {("a",): (0.0, 10.0), ("b",): (0.0, 10.0)}  # a + b = 10, both >= 0
        found, _ = bounds(t, {("a",)}, closed_form=closed_form)
        assert found == {("a",): (3.0, 3.0)}  # alone: total minus the others
        found, _ = bounds(t, {("a",), ("total",)}, closed_form=closed_form)
        assert found == {("a",): (0.0, None), ("total",): (47.0, None)}  # nothing bounds them above


def test_a_two_way_table_needs_four_cells_and_linprog_finds_them():
    """Rows and columns adding up (a category by euros: charged + own share = volume): hiding two cells
    of one row leaves each determined by its column; hiding a rectangle does not."""
    cells, rels = {}, []
    grid = {"r1": (3, 9), "r2": (20, 30), "r3": (11, 6)}
    for r, (x, y) in grid.items():
        cells.update({(r, "x"): Cell(x, 2 if r == "r1" else 50, AMOUNT), (r, "y"): Cell(y, 50, AMOUNT),
                      (r, "sum"): Cell(x + y, 50, AMOUNT)})
        rels.append(Relation((r, "sum"), ((r, "x"), (r, "y"))))
    for c in ("x", "y", "sum"):
        cells[("total", c)] = Cell(sum(cells[(r, c)].value for r in grid), 100, AMOUNT)
        rels.append(Relation(("total", c), tuple((r, c) for r in grid)))
    t = Tables(cells, rels)
    found, _ = bounds(t, {("r1", "x"), ("r1", "sum")})
    assert found[("r1", "x")] == (3.0, 3.0)  # its column's total gives it back
    rectangle = {("r1", "x"), ("r1", "y"), ("r2", "x"), ("r2", "y")}
    found, _ = bounds(t, rectangle)
    assert found[("r1", "x")] == (0.0, 12.0)  # r1: x + y = 12; column x: r1 + r2 = 23
    hidden = protect(t)
    assert hidden[("r1", "x")] == "primary" and audit(t, hidden).passed
    assert audit(t, hidden).intervals == audit(t, hidden, closed_form=False).intervals


def test_the_verdicts():
    small = Cell(3, 3, CLIENTS)
    assert disclosure.verdict(small, 3, 3) == SMALL_RANGE
    assert disclosure.verdict(small, 1, 4) == SMALL_RANGE  # shown to be 1-4: the issue's failure
    assert disclosure.verdict(small, 2, 7) == TOO_NARROW  # someone is there, that can be shown
    assert disclosure.verdict(small, 0, 4) == TOO_NARROW  # cannot reach 5
    assert disclosure.verdict(small, 0, 5) == PROTECTED and disclosure.verdict(small, 0, None) == PROTECTED
    euros = Cell(18000, 3, AMOUNT)  # half its value either way
    assert disclosure.verdict(euros, 9000, 27000) == PROTECTED
    assert disclosure.verdict(euros, 9001, 40000) == TOO_NARROW and disclosure.verdict(euros, 0, 26999) == TOO_NARROW


def test_distinct_clients_are_read_as_sums_where_the_figures_allow_it():
    """A reader may guess that nobody is counted twice: where the shown figures fit that, the audit
    reads the sums as equalities; where they contradict it (a client in two categories), as bounds."""
    def clients(total: int, a: int, b: int, c: int) -> Tables:
        cells = {("total",): Cell(total, total, CLIENTS), ("a",): Cell(a, a, CLIENTS), ("b",): Cell(b, b, CLIENTS),
                 ("c",): Cell(c, c, CLIENTS)}
        return Tables(cells, [Relation(("total",), (("a",), ("b",), ("c",)), distinct=True, nested=True)])
    found, models = bounds(clients(243, 3, 240, 0), {("a",), ("b",)})
    assert found[("a",)] == (0.0, 243.0) and models[("a",)] == disclosure.EQUAL
    t = clients(6, 3, 6, 6)  # the same six clients in b and in c (a provider of c shows them): 6 < 3 + 6 + 6
    t.cells[("p",)] = Cell(6, 6, CLIENTS)
    t.relations.append(Relation(("c",), (("p",),), distinct=True))
    found, models = bounds(t, {("a",), ("c",)})
    assert models[("a",)] == disclosure.BOUNDS  # a + c = 0 with c = 6 cannot be: read as bounds
    assert found == {("a",): (0.0, 6.0), ("c",): (0.0, 6.0)}  # each at most the total


# ------------------------------------------------------------------ the issue's month
def todays_rule(m) -> dict:  # noqa: ANN001
    """The suppression as main chose it before the linked tables: per table, the 1-4 cells and, where one
    row of a group adding up to a shown total was hidden, the next smallest row's same figure."""
    def per_table(rows: list[Row], figures, total: Row | None = None) -> None:  # noqa: ANN001
        for r in rows + ([total] if total else []):
            r.primary()
        for name in figures:
            if total is not None and name in total.suppressed:
                continue
            hidden = [r for r in rows if name in r.suppressed]
            candidates = [r for r in rows if name not in r.suppressed and r.bases.get(name, 0) > 0]
            if len(hidden) == 1 and candidates:
                min(candidates, key=lambda r: (r.bases.get(name, 0), str(r.key))).suppressed[name] = "secondary"
    per_table(m.rows, ADDITIVE, m.total)
    for category in {p.key["category"] for p in m.providers}:
        per_table([p for p in m.providers if p.key["category"] == category], ("clients", "charged_cents", "units"))
    per_table(m.bands, ("switches", "clients"), m.switch_total)
    hidden = {}
    for table in linked._keys(m).values():
        for key, row, figure in table:
            if figure in row.suppressed:
                hidden[key] = row.suppressed[figure]
    return hidden


def interval(result: disclosure.Audit, key: tuple) -> tuple:
    return next((i.lower, i.upper, i.verdict) for i in result.intervals if i.key == key)


def test_the_issues_month_fails_the_audit_under_todays_rule_and_passes_after():
    m = issue_month()
    t = linked.tables(m)
    home = ("091", "category", "home_care")
    assert (t.cells[("091", "total", "clients_served")].value, t.cells[(*home, "charged_cents")].value,
            t.cells[(*home, "units_used")].value) == (243, 47536666, 1730450)
    today = audit(t, todays_rule(m))
    assert not today.passed
    # total minus home care's providers gives back cleaning: 3 clients, 18,000 cents, 6 units
    assert interval(today, ("091", "category", "cleaning", "clients_served")) == (3.0, 3.0, SMALL_RANGE)
    assert interval(today, ("091", "category", "cleaning", "charged_cents")) == (18000.0, 18000.0, TOO_NARROW)
    assert interval(today, ("091", "category", "cleaning", "units_used")) == (600.0, 600.0, TOO_NARROW)

    hidden = protect(t)
    after = audit(t, hidden)
    assert after.passed, [i for i in after.intervals if i.verdict != PROTECTED]
    lower, upper, _ = interval(after, ("091", "category", "cleaning", "clients_served"))
    assert lower == 0 and upper >= MIN_CLIENTS
    assert after.intervals == audit(t, hidden, closed_form=False).intervals  # linprog alone agrees
    # a provider of home care is hidden too: its table no longer adds up to the category's figures
    assert any(k[1] == "provider" and k[2] == "home_care" for k in hidden)
    assert after.narrowest is not None and after.narrowest.key in hidden


# ------------------------------------------------------------------ generated months
@pytest.mark.parametrize("seed", range(6))
def test_random_months_of_many_categories_and_providers_pass_the_audit(seed):  # noqa: ANN001
    m = random_month(seed, categories=10, providers=200)
    t = linked.tables(m)
    started = time.perf_counter()
    hidden = protect(t)
    result = audit(t, hidden)
    seconds = time.perf_counter() - started
    assert result.passed, [i for i in result.intervals if i.verdict != PROTECTED][:5]
    assert all(k in hidden for k in t.primary())  # no cell of 1-4 clients shown
    assert protect(linked.tables(m)) == hidden  # deterministic
    assert seconds < 10, seconds  # measured ~0.05 s on a quiet machine; a wide margin for a loaded one
    if seed < 2:  # every component by linprog, single sums too: the same intervals
        assert audit(t, hidden, closed_form=False).intervals == result.intervals


def test_every_small_arrangement_passes_the_audit():
    """Every arrangement of small and large categories, one or two providers each: the choice always
    passes its audit, and hides no more than it must on a table without small cells."""
    rng = random.Random(18)
    cases = list(itertools.product([0, 1, 3, 5, 8, 40], repeat=3))
    cases += [tuple(rng.choice([0, 1, 2, 4, 5, 6, 9, 40]) for _ in range(rng.randint(1, 6))) for _ in range(120)]
    for clients in cases:
        spec = {f"c{i}": ({"p": (n, 2500 * n, 300 * n)} if i % 2 else
                          {"p": (n // 2, 2500 * (n // 2), 300 * (n // 2)), "q": (n - n // 2, 2600 * (n - n // 2),
                                                                                 300 * (n - n // 2))})
                for i, n in enumerate(clients) if n}
        m = month_of(spec)
        t = linked.tables(m)
        hidden = protect(t)
        assert audit(t, hidden).passed, clients
        if not t.primary():
            assert hidden == {}


def test_the_forms_of_a_month_hide_the_same_cells():
    """The monthly report's rows, the price development's month and the volume chart's month are the
    same cells: a figure hidden in one is hidden in the others."""
    m = random_month(3, categories=6, providers=30)
    linked.apply(m, linked.pattern(m))
    rows = [Row({"period": m.period, "category": r.key["category"]},
                {"charged_units": r.values["units_used"], "clients_charged": r.values["clients_served"],
                 "unit_weighted_price_cents": r.values["average_charged_price_cents"]},
                {"charged_units": 9, "clients_charged": 9, "unit_weighted_price_cents": 9}) for r in m.rows]
    linked.price_rows(rows, {m.period: m})
    for price, row in zip(rows, m.rows):
        for figure, cell in linked.PRICE_CELLS.items():
            assert (figure in price.suppressed) == (cell in row.suppressed), (row.key, figure)
    assert any(r.suppressed for r in m.rows)  # the seed has hidden category cells


# ------------------------------------------------------------------ the operator's statistics
def test_the_operators_statistics_do_not_give_back_a_funders_small_cell():
    """Funder 091's cleaning has 3 clients, 049's 30: statistics showing cleaning's 33 beside 049's
    report would give back 091's 3. The choice hides it, and the audit over both funders' reports and the
    statistics passes."""
    op, funders = operator_of({
        "091": {"cleaning": {"s1": (3, 18000, 600)}, "home_care": {"h1": (120, 2_400_000, 96000),
                                                                   "h2": (60, 1_200_000, 48000)}},
        "049": {"cleaning": {"s2": (30, 180000, 6000)}, "home_care": {"h3": (70, 1_400_000, 56000)}}})
    assert [r.values["clients_served"] for r in op.rows] == [33, 250]
    t, hidden = linked.operator_pattern(op, funders)
    assert ("*", "category", "cleaning", "clients_served") in hidden
    assert ("091", "category", "cleaning", "clients_served") in hidden
    assert not any(k[0] == "049" for k in hidden)  # 049's own report is as it was
    result = audit(t, hidden)
    assert result.passed, [i for i in result.intervals if i.verdict != PROTECTED]
    assert {k: v for k, v in hidden.items() if k[0] == "091"} == linked.pattern(funders["091"])


def test_a_choice_that_cannot_be_verified_hides_every_figure_about_clients(monkeypatch):  # noqa: ANN001
    def broken(self, limit: int = 0) -> None:  # noqa: ANN001
        raise RuntimeError("the published figures contradict the relations between them")
    monkeypatch.setattr(disclosure._Chooser, "verified_pass", broken)
    t = linked.tables(issue_month())
    hidden = protect(t)
    assert {k for k, c in t.cells.items() if c.base or c.value} <= set(hidden)
    assert audit(t, hidden).passed


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "", "2026-11-01", "abcd-ef"])
def test_a_period_is_a_month(text):  # noqa: ANN001
    with pytest.raises(DomainError):
        Period.parse(text)


def test_periods():
    p = Period.parse("2026-12")
    assert (str(p.next()), p.first.isoformat(), p.last.isoformat()) == ("2027-01", "2026-12-01", "2026-12-31")
    assert Period.parse("2028-02").last.day == 29
