"""Linked tables: secondary suppression chosen over every figure published about one population, and
the audit that proves by linear programming what a reader can still work out. Pure: no I/O.

**The cells and their relations.** A report's figures are *cells* (an integer in the figure's smallest
unit: clients, cents, hundredths of a unit), each with a *base* (the distinct clients it describes).
Cells are tied by *relations* ``total = sum(parts)``: a total row and its categories, a category and its
providers, the money volume and its charged and own-share parts, the settled gross and its net and fee.
Counts of distinct clients are not additive (a client may use two categories or two providers in a
month): for them a relation is ``distinct`` and always holds as ``total <= sum(parts)``, with each part
at most the total where the parts are themselves sets of clients (``nested``). A reader who guesses that
nobody is counted twice reads it as an equality; the audit does the same wherever the published figures
allow it (see ``bounds``), so what it proves holds against that reader too.

**Primary and secondary suppression.** A cell of 1-4 clients is hidden (*primary*). Secondary cells are
then chosen over the whole set, in two steps: (1) a fast pass over the relations: no relation may hold
exactly one hidden cell, and the hidden cells beside a primary one must have room to move it by its
protection width (``need``, up and down); partners are the cheapest cells (value lost) with that room,
parts before totals, rows already partly hidden first among equals; (2) the audit's linear programs on
the primary cells, and for each one still under-protected, the cheapest shown cell of the relations
around it, again until every primary cell passes. Deterministic (sorted keys, no randomness), and each
step hides a cell more, so it ends: with every cell hidden nothing can be worked out at all.

**The audit.** For each hidden cell, the smallest and largest value it can take given every shown
cell, the relations and non-negativity (counts treated as continuous), computed with
``scipy.optimize.linprog`` (HiGHS): the hidden cells fall into independent components (cells tied by
relations), all solved in one program; a component that is a single sum is taken in closed form (what its
program gives; the tests compare). A *primary* cell is protected when its interval

- for a count of clients (x of 1-4): reaches 0 below and ``MIN_CLIENTS`` above: neither that anybody is
  in the group nor that they are few can be shown (so it never lies within 1..4);
- for an amount (euros, units, charges) x: reaches ``x * (1 - PROTECTION_SHARE)`` below and
  ``x * (1 + PROTECTION_SHARE)`` above (half the value either way).

A secondary cell describes 5 clients or more and needs no width of its own; its interval is reported.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_array

from seteli_shared.logging import get_logger

from .domain import MIN_CLIENTS, needs_suppression

log = get_logger(__name__)

CLIENTS = "clients"  # the cell counts clients (or their vouchers): its protection is 0..MIN_CLIENTS
AMOUNT = "amount"  # euros, units, charges: its protection is a share of its value
PROTECTION_SHARE = Decimal("0.5")
PRIMARY, SECONDARY = "primary", "secondary"
PROTECTED, SMALL_RANGE, TOO_NARROW = "protected", "within_small_range", "too_narrow"
#: models of the distinct-client relations, strongest first: sums as equalities (nobody counted twice),
#: the bounds that always hold, none (only when even those do not fit the published figures)
EQUAL, BOUNDS, FREE = "equal", "bounds", "free"
_TOL = 1e-6

Key = tuple  # (table, *row key, figure): the figure last, the row before it


@dataclass(frozen=True)
class Cell:
    value: int
    base: int
    kind: str = AMOUNT


@dataclass(frozen=True)
class Relation:
    """``total = sum(parts)``; ``distinct``: counts of distinct clients, ``total <= sum(parts)`` (and each
    part ``<= total`` when ``nested``)."""

    total: Key
    parts: tuple[Key, ...]
    distinct: bool = False
    nested: bool = False

    @property
    def members(self) -> tuple[Key, ...]:
        return (self.total, *self.parts)


@dataclass
class Tables:
    """Linked tables: every cell a reader can see about one population and the relations between them.
    ``fixed``: cells whose hiding another publication decided (never chosen here, still audited)."""

    cells: dict[Key, Cell]
    relations: list[Relation]
    fixed: frozenset = frozenset()
    _touching: dict | None = field(default=None, repr=False)

    def touching(self) -> dict[Key, list[int]]:
        """cell -> the relations it is a member of (by index)."""
        if self._touching is None:
            out: dict[Key, list[int]] = defaultdict(list)
            for i, r in enumerate(self.relations):
                for m in r.members:
                    out[m].append(i)
            self._touching = out
        return self._touching

    def primary(self) -> set[Key]:
        return {k for k, c in self.cells.items() if needs_suppression(c.base)}


# ------------------------------------------------------------------ protection widths
def required(cell: Cell) -> tuple[float, float]:
    """(the interval's lower end must be at most, its upper end at least) for a primary cell."""
    if cell.kind == CLIENTS:
        return 0.0, float(MIN_CLIENTS)
    share = float(PROTECTION_SHARE)
    return cell.value * (1 - share), cell.value * (1 + share)


def need(cell: Cell) -> tuple[float, float]:
    """How far a primary cell must be able to move (up, down) for its protection width."""
    low, high = required(cell)
    return max(high - cell.value, 0.0), max(cell.value - low, 0.0)


def verdict(cell: Cell, lower: float, upper: float | None) -> str:
    low, high = required(cell)
    top = float("inf") if upper is None else upper
    if cell.kind == CLIENTS and lower >= 1 - _TOL and top <= MIN_CLIENTS - 1 + _TOL:
        return SMALL_RANGE
    slack = _TOL * max(1.0, abs(cell.value))
    return PROTECTED if lower <= low + slack and top >= high - slack else TOO_NARROW


# ------------------------------------------------------------------ the linear programs
@dataclass
class _Component:
    """Hidden cells tied together by relations, and those relations: an independent linear program."""

    cells: list[Key]
    relations: list[Relation]
    model: str = EQUAL


def components(tables: Tables, hidden: Iterable[Key]) -> list[_Component]:
    hidden = set(hidden)
    parent = {k: k for k in hidden}

    def find(k: Key) -> Key:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    used: list[Relation] = []
    for r in tables.relations:
        inside = [m for m in r.members if m in hidden]
        if not inside:
            continue  # every cell shown: it tells a reader nothing new
        used.append(r)
        for m in inside[1:]:
            a, b = find(inside[0]), find(m)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[Key, _Component] = {}
    for k in sorted(hidden):
        groups.setdefault(find(k), _Component([], [])).cells.append(k)
    for r in used:
        groups[find(next(m for m in r.members if m in hidden))].relations.append(r)
    return [groups[g] for g in sorted(groups)]


@dataclass
class _Program:
    """One component's constraints over its hidden cells (columns), for one model: coordinate arrays
    (row, column, coefficient) and right-hand sides of the equalities and of the inequalities (<=)."""

    eq: tuple[np.ndarray, np.ndarray, np.ndarray]
    b_eq: np.ndarray
    ub: tuple[np.ndarray, np.ndarray, np.ndarray]
    b_ub: np.ndarray
    columns: int
    cap: float


def _program(tables: Tables, comp: _Component, model: str) -> _Program:
    col = {k: i for i, k in enumerate(comp.cells)}
    entries: dict[str, list] = {"eq": [], "ub": []}
    rhs: dict[str, list[float]] = {"eq": [], "ub": []}
    published = 0.0

    def row(terms: list[tuple[Key, float]], kind: str) -> None:
        nonlocal published
        r, const = len(rhs[kind]), 0.0
        for key, coef in terms:
            if key in col:
                entries[kind].append((r, col[key], coef))
            else:
                const += coef * tables.cells[key].value
                published += abs(tables.cells[key].value)
        rhs[kind].append(-const)

    for rel in comp.relations:
        terms = [(rel.total, 1.0)] + [(p, -1.0) for p in rel.parts]
        if not rel.distinct or model == EQUAL:
            row(terms, "eq")
        elif model == BOUNDS:
            row(terms, "ub")  # total - sum(parts) <= 0
            if rel.nested:
                for p in rel.parts:
                    if p in col or rel.total in col:
                        row([(p, 1.0), (rel.total, -1.0)], "ub")

    def arrays(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = entries[kind]
        return (np.array([x[0] for x in e], dtype=np.int64), np.array([x[1] for x in e], dtype=np.int64),
                np.array([x[2] for x in e], dtype=float))

    # no bounded cell can exceed the published values it is tied to: the cap only stands for "no bound"
    return _Program(arrays("eq"), np.array(rhs["eq"]), arrays("ub"), np.array(rhs["ub"]), len(comp.cells),
                    cap=4.0 * (published + MIN_CLIENTS + 1))


def _solve(groups: list[tuple[_Program, list[tuple[int, float]]]]) -> np.ndarray | None:
    """One linear program of independent blocks: a copy of a component's program for each (objective
    column, sign) of its group (column -1: no objective). The sum of separate objectives is optimal only
    where each block's own is, so one solve gives every block's optimum. The solution vector (the blocks'
    columns one after another), or None when infeasible."""
    parts: dict[str, list] = {"eq": [], "ub": []}
    rhs: dict[str, list] = {"eq": [], "ub": []}
    rows = {"eq": 0, "ub": 0}
    objective, caps = [], []
    offset = 0
    for prog, targets in groups:
        n, width = len(targets), prog.columns
        for kind, (r, c, v), b in (("eq", prog.eq, prog.b_eq), ("ub", prog.ub, prog.b_ub)):
            if len(b):
                copies = np.arange(n)
                parts[kind].append(((r[None, :] + (rows[kind] + copies * len(b))[:, None]).ravel(),
                                    (c[None, :] + (offset + copies * width)[:, None]).ravel(), np.tile(v, n)))
                rhs[kind].append(np.tile(b, n))
                rows[kind] += n * len(b)
        obj = np.zeros((n, width))
        for i, (col, sign) in enumerate(targets):
            if col >= 0:
                obj[i, col] = sign
        objective.append(obj.ravel())
        caps.append(np.full(n * width, prog.cap))
        offset += n * width
    if offset == 0:
        return np.zeros(0)

    def matrix(kind: str) -> tuple:
        if not rows[kind]:
            return None, None
        r, c, v = (np.concatenate([p[i] for p in parts[kind]]) for i in range(3))
        return coo_array((v, (r, c)), shape=(rows[kind], offset)).tocsr(), np.concatenate(rhs[kind])

    a_eq, b_eq = matrix("eq")
    a_ub, b_ub = matrix("ub")
    res = linprog(np.concatenate(objective), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                  bounds=np.column_stack([np.zeros(offset), np.concatenate(caps)]), method="highs")
    if res.status == 2:
        return None
    if res.status != 0:
        raise RuntimeError(f"linear program failed: {res.message}")
    return res.x


def _has_distinct(comp: _Component) -> bool:
    return any(r.distinct for r in comp.relations)


def _one_sum(tables: Tables, comp: _Component) -> dict[Key, tuple[float, float | None]] | None:
    """The bounds of a component that is one sum read as an equality, in closed form (what its linear
    program gives: with the total shown, the hidden parts share what the shown ones leave, each from 0
    to all of it; with the total hidden, nothing bounds them above); None when it is not one."""
    if len(comp.relations) != 1 or comp.model != EQUAL:
        return None
    rel, cells, hidden = comp.relations[0], tables.cells, set(comp.cells)
    shown_parts = sum(cells[p].value for p in rel.parts if p not in hidden)
    hidden_parts = [p for p in rel.parts if p in hidden]
    if rel.total not in hidden:
        rest = float(cells[rel.total].value - shown_parts)
        if rest < 0:
            return None  # contradicts the figures: the linear program says so
        return {p: (rest if len(hidden_parts) == 1 else 0.0, rest) for p in hidden_parts}
    if not hidden_parts:
        return {rel.total: (float(shown_parts), float(shown_parts))}
    return {rel.total: (float(shown_parts), None), **{p: (0.0, None) for p in hidden_parts}}


def _choose_models(tables: Tables, comps: list[_Component]) -> None:
    """Each component's model of its distinct-client relations: the strongest the published figures
    allow (a zero-objective program per model; all components at once first)."""
    mixed = [c for c in comps if _has_distinct(c)]
    for comp in mixed:
        comp.model = EQUAL
    mixed = [c for c in mixed if _one_sum(tables, c) is None]  # one sum that fits the figures: equal it is
    if not mixed or _solve([(_program(tables, c, EQUAL), [(-1, 0.0)]) for c in mixed]) is not None:
        return
    for comp in mixed:
        for model in (EQUAL, BOUNDS, FREE):
            comp.model = model
            if model == FREE or _solve([(_program(tables, comp, model), [(-1, 0.0)])]) is not None:
                break
        log.info("report.audit_model", model=comp.model, cells=len(comp.cells))


def bounds(tables: Tables, hidden: Iterable[Key], wanted: Iterable[Key] | None = None, closed_form: bool = True,
           found: list[_Component] | None = None) -> tuple[dict[Key, tuple[float, float | None]], dict[Key, str]]:
    """The smallest and largest value of each ``wanted`` hidden cell (default: every hidden cell) given
    every shown cell: {cell: (lower, upper or None when unbounded)}, and each cell's model. Components
    that are a single sum take the closed form (``_one_sum``) unless ``closed_form`` is False; every other
    one is solved by ``linprog``. ``found``: the hidden cells' components, when already known."""
    hidden = set(hidden)
    wanted = hidden if wanted is None else set(wanted) & hidden
    comps = [c for c in (found or components(tables, hidden)) if any(k in wanted for k in c.cells)]
    _choose_models(tables, comps)
    out: dict[Key, tuple[float, float | None]] = {}
    models: dict[Key, str] = {}
    groups, where = [], []
    offset = 0
    for comp in comps:
        mine = [(i, k) for i, k in enumerate(comp.cells) if k in wanted]
        models.update({k: comp.model for _, k in mine})
        direct = _one_sum(tables, comp) if closed_form else None
        if direct is not None:
            out.update({k: direct[k] for _, k in mine})
            continue
        prog = _program(tables, comp, comp.model)
        targets = []
        for i, k in mine:
            for sign in (1.0, -1.0):
                where.append((k, sign, offset + len(targets) * prog.columns + i, prog.cap))
                targets.append((i, sign))
        groups.append((prog, targets))
        offset += len(targets) * prog.columns
    if groups:
        x = _solve(groups)
        if x is None:
            raise RuntimeError("the published figures contradict the relations between them")
        found: dict[Key, list] = {}
        for k, sign, at, cap in where:
            value = float(x[at])
            slot = found.setdefault(k, [0.0, None])
            if sign > 0:
                slot[0] = max(0.0, _snap(value))
            else:
                slot[1] = None if value >= cap / 2 else _snap(value)
        out.update({k: (v[0], v[1]) for k, v in found.items()})
    return out, models


def _snap(v: float) -> float:
    r = round(v)
    return float(r) if abs(v - r) <= _TOL * max(1.0, abs(v)) else v


# ------------------------------------------------------------------ choosing the secondary cells
class _Chooser:
    """The fast pass keeps, for each hidden cell, how far it must be able to move up and down (a primary
    cell for its own protection, a partner for the cell it protects). In a relation ``total = sum(parts)``
    only one direction is bounded by the hidden cells' values: a part goes up while the other hidden parts
    go down (unless the total is hidden: then it goes up with it), and the total goes down while its
    hidden parts do. The other direction is bounded only in other relations, where the partner carries it."""

    def __init__(self, tables: Tables, hidden: dict[Key, str]):
        self.t = tables
        self.hidden = hidden
        self.need: dict[Key, tuple[float, float]] = {k: need(tables.cells[k]) for k, s in hidden.items()
                                                     if s == PRIMARY}
        self.rows_hidden = {k[:-1] for k in hidden}
        self.queue: list[int] = []

    def hide(self, key: Key, moves: tuple[float, float]) -> None:
        self.hidden.setdefault(key, SECONDARY)
        old = self.need.get(key, (0.0, 0.0))
        self.need[key] = (max(old[0], moves[0]), max(old[1], moves[1]))
        self.rows_hidden.add(key[:-1])
        self.queue.extend(self.t.touching().get(key, []))

    def shown(self, members: Iterable[Key]) -> list[Key]:
        """The members that may still be hidden here."""
        return [m for m in members if m not in self.hidden and m not in self.t.fixed and m in self.t.cells]

    def order(self, keys: Iterable[Key], deficit: float, totals: frozenset | set = frozenset()) -> list[Key]:
        """Cheapest first: enough room, a part rather than a total, the smallest value lost, then a row
        already partly hidden (so related figures tend to hide the same rows)."""
        cells = self.t.cells
        return sorted(keys, key=lambda k: (cells[k].value < deficit, k in totals, cells[k].value,
                                           k[:-1] not in self.rows_hidden, k))

    # ---- (1) the fast pass
    def fast_pass(self) -> None:
        """No relation with exactly one hidden cell; the hidden cells beside one have room to move it.
        A relation is looked at again whenever one of its cells is hidden."""
        fixed = self.t.fixed
        self.queue = [i for i, r in enumerate(self.t.relations)  # those decided elsewhere alone: nothing to do
                      if not fixed or any(m not in fixed for m in r.members)]
        while self.queue:
            self._widen(self.queue.pop())

    def _short(self, rel: Relation, inside: list[Key]) -> tuple[Key, float] | None:
        """The first hidden cell of the relation that is alone or lacks room, and the room it lacks."""
        cells = self.t.cells
        parts_sum = float(sum(cells[m].value for m in inside if m != rel.total))
        for key in inside:
            up, down = self.need.get(key, (0.0, 0.0))
            if len(inside) < 2:
                return key, max(up, down)
            if key == rel.total:
                room, wanted = parts_sum, down
            else:
                room, wanted = (float("inf") if rel.total in inside else parts_sum - cells[key].value), up
            if room < wanted:
                return key, wanted - room
        return None

    def _widen(self, index: int) -> None:
        rel = self.t.relations[index]
        while True:
            inside = [m for m in rel.members if m in self.hidden]
            short = self._short(rel, inside) if inside else None
            if short is None or not self._add(rel, *short):
                return  # protected here, or nothing left to hide: the verified pass decides

    def _add(self, rel: Relation, key: Key, deficit: float) -> bool:
        """Hide the cheapest part with room enough for the deficit; else the cheapest parts until their
        room covers it; else (parts too small, or none) the total, whose room is any. A partner moves
        against a part it protects and with a total (or with the total it is a part of). False: none left."""
        cells = self.t.cells
        up, down = self.need.get(key, (0.0, 0.0))
        against, along = (down, up), (up, down)
        moves = along if key == rel.total else against
        parts = self.order(self.shown(rel.parts), deficit)
        total = self.shown([rel.total])
        if parts and (not total or sum(cells[k].value for k in parts) >= deficit):
            room = 0.0
            for k in parts:
                self.hide(k, moves)
                room += cells[k].value
                if room >= deficit:
                    break
            return True
        if total:
            self.hide(total[0], along)
            return True
        return False

    # ---- (2) the verified pass
    def verified_pass(self, limit: int = 1_000) -> None:
        """The audit on every primary cell; each one under-protected gets the cheapest shown cell of the
        relations around it (and the fast pass again from there), until none is. Cells decided elsewhere
        are looked at only where this publication's cells reach them."""
        primaries = sorted(k for k in self.t.primary() if k in self.hidden)
        for _ in range(limit):
            every = components(self.t, self.hidden)
            comps = {k: c for c in every for k in c.cells}
            wanted = [k for k in primaries if self._ours(comps[k])]
            found, _models = bounds(self.t, self.hidden, wanted, found=every)
            failing = [k for k in sorted(found) if verdict(self.t.cells[k], *found[k]) != PROTECTED]
            if not failing:
                return
            for key in failing:
                low, high = required(self.t.cells[key])
                lower, upper = found[key]
                deficit = max(0.0 if upper is None else high - upper, lower - low, 1.0)
                if not self._repair(key, comps[key], deficit):
                    raise RuntimeError(f"no cell left to protect {key}")
            while self.queue:
                self._widen(self.queue.pop())
        raise RuntimeError(f"suppression not settled after {limit} rounds")

    def _ours(self, comp: _Component) -> bool:
        fixed = self.t.fixed
        return not fixed or any(k not in fixed for k in comp.cells) or any(
            m not in fixed for r in comp.relations for m in r.members)

    def _repair(self, key: Key, comp: _Component, deficit: float) -> bool:
        """Hide the cheapest shown cell of the relations of ``key``, else of its component, else of the
        relations that reach the component's cells."""
        touching = self.t.touching()
        wanted = self.need.get(key, (deficit, deficit))
        reach = {m for r in comp.relations for m in r.members}
        for group in ([self.t.relations[i] for i in touching.get(key, [])], comp.relations,
                      [self.t.relations[i] for m in sorted(reach) for i in touching.get(m, [])]):
            shown = set(self.shown(m for r in group for m in r.members))
            if shown:
                self.hide(self.order(shown, deficit, {r.total for r in group})[0], wanted)
                return True
        return False


def protect(tables: Tables, fixed_hidden: Iterable[Key] = ()) -> dict[Key, str]:
    """Every hidden cell -> ``primary`` (1-4 clients) or ``secondary`` (chosen to protect them).
    ``fixed_hidden``: cells of ``tables.fixed`` hidden by their own publication (kept, and audited)."""
    started = time.perf_counter()
    hidden: dict[Key, str] = {k: PRIMARY for k in sorted(tables.primary()) if k not in tables.fixed}
    for k in fixed_hidden:
        hidden[k] = PRIMARY if needs_suppression(tables.cells[k].base) else SECONDARY
    if not hidden:
        return hidden
    chooser = _Chooser(tables, hidden)
    chooser.fast_pass()
    try:
        chooser.verified_pass()
    except RuntimeError as failed:  # never expected: then nothing about clients is published (privacy first)
        log.error("report.suppression_failed", error=str(failed), cells=len(tables.cells))
        for k, c in tables.cells.items():
            if k not in tables.fixed and (c.base or c.value):
                hidden.setdefault(k, SECONDARY)
    log.debug("report.suppression_chosen", cells=len(tables.cells), hidden=len(hidden),
              seconds=round(time.perf_counter() - started, 4))
    return hidden


# ------------------------------------------------------------------ the audit
@dataclass(frozen=True)
class Interval:
    key: Key
    lower: float
    upper: float | None
    verdict: str
    model: str


@dataclass(frozen=True)
class Audit:
    intervals: list[Interval]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(i.verdict == PROTECTED for i in self.intervals)

    @property
    def narrowest(self) -> Interval | None:
        """The interval narrowest against its own upper end ((upper - lower) / upper): computed from the
        published figures alone, so naming it tells nothing of which cells are small."""
        def width(i: Interval) -> tuple:
            if i.upper is None:
                return (float("inf"), i.key)
            return ((i.upper - i.lower) / i.upper if i.upper else float("inf"), i.key)
        return min(self.intervals, key=width, default=None)


def audit(tables: Tables, hidden: dict[Key, str], closed_form: bool = True) -> Audit:
    """Every hidden cell's interval given everything published, and its verdict (see the module's note);
    ``closed_form=False``: every component by ``linprog``, single sums too."""
    started = time.perf_counter()
    found, models = bounds(tables, hidden, closed_form=closed_form)
    out = []
    for key in sorted(found):
        lower, upper = found[key]
        cell = tables.cells[key]
        judged = verdict(cell, lower, upper) if needs_suppression(cell.base) else PROTECTED
        out.append(Interval(key, lower, upper, judged, models[key]))
    return Audit(out, time.perf_counter() - started)
