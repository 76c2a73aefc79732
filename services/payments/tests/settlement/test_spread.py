"""The settlement's fee spread in whole numbers (``figures.spread``) gives exactly what ``money.allocate`` gives:
the same cent on the same charge, for any fee and charges, ties to the earlier charge included."""
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from payments.settlement import figures
from seteli_shared.money import allocate


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=60))
def test_spread_is_allocate(total, weights):
    assert figures.spread(total, weights) == allocate(total, weights)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([1, 2500, 2501, 2506, 3333, 10**6]), min_size=1, max_size=300),
       st.sampled_from(["0.05", "0.03", "0.0333", "0.1"]))
def test_a_settlements_fees_are_allocates(amounts, rate):
    """Repeated amounts (many ties), the fee rounded once: the parts, their sum and the order of the cents."""
    s = figures.settle(amounts, Decimal(rate))
    assert s.charge_fees == allocate(s.fee_cents, amounts) and sum(s.charge_fees) == s.fee_cents


def test_what_spread_hands_to_allocate():
    for total, weights in [(5, [0, 0]), (-7, [1, 2]), (3, [-1, 4]), (10**20, [10**6, 1])]:
        assert figures.spread(total, weights) == allocate(total, weights)
