"""Settlement figures, pure: the fee rounded once and spread to the cent, contract rates, corrections
offset while the payout stays at or above zero, and the postings balanced."""
from decimal import Decimal

import pytest

from payments.ledger import postings
from payments.settlement import figures


def test_settlement_of_100_euros_is_95_net_and_5_fee():
    s = figures.settle([10000], Decimal("0.05"))
    assert (s.gross_cents, s.fee_cents, s.net_cents, s.charge_fees) == (10000, 500, 9500, [500])


def test_settlement_fee_is_rounded_once_and_spread_over_charges_to_the_cent():
    s = figures.settle([333, 333, 334], Decimal("0.05"))
    assert s.fee_cents == 50 and sum(s.charge_fees) == 50 and s.net_cents == 950


def test_postings_balance():
    s = figures.settle([12345], Decimal("0.05"))
    assert sum(a for _, a in postings.settlement_postings("p1", s)) == 0
    assert sum(a for _, a in postings.charge_postings("091", "p1", 12345)) == 0
    with pytest.raises(AssertionError):
        postings.balanced([("a", 1), ("b", -2)])


def test_a_funders_contract_rate_wins_over_the_default():
    assert figures.fee_rate_for("0.03", Decimal("0.05")) == Decimal("0.03")
    assert figures.fee_rate_for("0", Decimal("0.05")) == Decimal("0")
    assert figures.fee_rate_for(None, Decimal("0.05")) == Decimal("0.05"), "a funder not heard of: the default"
    with pytest.raises(AssertionError):
        figures.fee_rate_for("1.2", Decimal("0.05"))


def test_fee_rate_range():
    assert figures.fee_rate_in_range(Decimal("0")) and figures.fee_rate_in_range(Decimal("0.9999"))
    assert not figures.fee_rate_in_range(Decimal("1")) and not figures.fee_rate_in_range(Decimal("-0.01"))
    assert not figures.fee_rate_in_range(Decimal("NaN"))


def test_settlement_at_a_3_percent_contract():
    s = figures.settle([10000, 2345], Decimal("0.03"))
    assert (s.gross_cents, s.fee_cents, s.net_cents) == (12345, 370, 11975)
    assert sum(s.charge_fees) == 370


def test_corrections_offset_the_next_settlement_in_order_while_its_net_stays_at_or_above_zero():
    a, b, c = (figures.PendingCorrection("a", 2500, 125), figures.PendingCorrection("b", 10000, 500),
               figures.PendingCorrection("c", 1000, 50))
    # 100.00 of charges, net 95.00: a (23.75) fits, b (95.00) would make it negative: b and c wait
    offset = figures.settle_with_corrections([10000], Decimal("0.05"), [a, b, c])
    assert [x.id for x in offset.offset] == ["a"]
    f = offset.figures
    assert (f.gross_cents, f.fee_cents, f.net_cents, f.charge_fees) == (7500, 375, 7125, [500])
    # exactly used up: a payout of nothing, never below
    exact = figures.settle_with_corrections([10000], Decimal("0.05"), [b])
    assert (exact.figures.net_cents, [x.id for x in exact.offset]) == (0, ["b"])
    assert figures.settle_with_corrections([2500], Decimal("0.05"), [b]).figures.net_cents == 2375
    entries = postings.settlement_postings("p1", f)
    assert sum(x for _, x in entries) == 0 and dict(entries)["provider:p1:payout_due"] == -7125
