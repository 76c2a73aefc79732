"""The small-cell rule on its own: no figure leaving a funder describes 1-4 clients, and no suppressed
figure can be worked out from a total minus the figures shown."""
from __future__ import annotations

import itertools
import random

import pytest

from reporting.domain import MIN_CLIENTS, Period, Row, needs_suppression, suppress
from seteli_shared.errors import DomainError


def rows_of(bases: list[int]) -> tuple[list[Row], Row]:
    rows = [Row({"category": f"c{i}"}, {"clients": b, "euros": 100 * b}, {"clients": b, "euros": b})
            for i, b in enumerate(bases)]
    total = Row({"category": "total"}, {"clients": sum(bases), "euros": 100 * sum(bases)},
                {"clients": sum(bases), "euros": sum(bases)})
    return rows, total


@pytest.mark.parametrize("clients,hidden", [(0, False), (1, True), (4, True), (5, False), (348, False)])
def test_a_figure_of_fewer_than_five_clients_is_suppressed(clients, hidden):  # noqa: ANN001
    assert needs_suppression(clients) is hidden
    rows, total = rows_of([clients, 50, 60])
    suppress(rows, ["clients", "euros"], total)
    shown = rows[0].public()
    assert (shown["clients"] is None) is hidden and (shown["euros"] is None) is hidden
    assert (shown["suppressed"] == ["clients", "euros"]) is hidden
    assert MIN_CLIENTS == 5


def test_one_suppressed_row_takes_the_next_smallest_with_it():
    rows, total = rows_of([2, 7, 30, 6])
    suppress(rows, ["clients", "euros"], total)
    assert [r.suppressed.get("euros") for r in rows] == ["primary", None, None, "secondary"]
    assert total.public()["euros"] == 4500  # the total is shown, and matches the invoices


def test_a_suppressed_total_needs_no_complement():
    rows, total = rows_of([3, 0])
    suppress(rows, ["euros"], total)
    assert rows[0].public()["euros"] is None and total.public()["euros"] is None
    assert rows[1].public()["euros"] == 0


def test_no_suppressed_figure_can_be_worked_out_from_the_total():
    """Every arrangement of small and large groups: total minus the shown rows never isolates one
    suppressed cell (it is either nothing or a sum of two or more suppressed cells)."""
    rng = random.Random(10)
    cases = [list(c) for c in itertools.product([0, 1, 3, 5, 8], repeat=3)]
    cases += [[rng.choice([0, 1, 2, 4, 5, 6, 9, 40]) for _ in range(rng.randint(1, 8))] for _ in range(300)]
    for bases in cases:
        rows, total = rows_of(bases)
        suppress(rows, ["clients", "euros"], total)
        if total.public()["euros"] is None:
            assert sum(bases) < MIN_CLIENTS
            continue
        hidden = [r for r in rows if r.public()["euros"] is None]
        assert len(hidden) != 1, bases
        assert all(not needs_suppression(r.bases["euros"]) for r in rows if r.public()["euros"] is not None)


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-11", "", "2026-11-01", "abcd-ef"])
def test_a_period_is_a_month(text):  # noqa: ANN001
    with pytest.raises(DomainError):
        Period.parse(text)


def test_periods():
    p = Period.parse("2026-12")
    assert (str(p.next()), p.first.isoformat(), p.last.isoformat()) == ("2027-01", "2026-12-01", "2026-12-31")
    assert Period.parse("2028-02").last.day == 29
