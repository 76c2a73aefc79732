"""A CSV file's cells read the same way on every line: a value repeated down the file (as a month's file repeats
its dates, units and prices; ``csv_format`` reads each distinct cell once) gives each line the same values, and a
bad cell refuses every line that holds it, not only the first."""
from __future__ import annotations

from payments.charging.csv_format import rows

HEADER = "voucher_id;provider_reference;service_date;units;unit_price\n"


def _rows(text: str) -> list:
    return list(rows([text.encode()]))


def test_repeated_cells_give_every_line_the_same_values_and_refusals():
    body = HEADER + "".join(f"v1;ref-{i};{day};{units};{price}\n" for i, (day, units, price) in enumerate([
        ("1.6.2026", "1,5", "27,50"), ("1.6.2026", "1,5", "27,50"),
        ("31.6.2026", "1,5", "27,50"), ("31.6.2026", "1,5", "27,50"),   # no such day, twice
        ("1.6.2026", "1,5", "27,505"), ("1.6.2026", "1,5", "27,505"),   # three decimals of a euro, twice
        ("1.6.2026", "1 0", "27,50"), ("1.6.2026", "1 0", "27,50"),     # not grouped by three, twice
        ("2.6.2026", "1 000,50", "1 000,00")]))
    got = [(r.reason, r.fields, r.values) for r in _rows(body)]
    accepted = {"voucher_id": "v1", "service_date": "2026-06-01", "units": "1.5", "unit_price_cents": 2750}
    assert got[0] == (None, [], {**accepted, "provider_reference": "ref-0"})
    assert got[1] == (None, [], {**accepted, "provider_reference": "ref-1"})
    assert [g[:2] for g in got[2:8]] == [("invalid_number_or_date", ["service_date"])] * 2 + [
        ("invalid_number_or_date", ["unit_price"])] * 2 + [("invalid_number_or_date", ["units"])] * 2
    assert got[8] == (None, [], {"voucher_id": "v1", "provider_reference": "ref-8", "service_date": "2026-06-02",
                                 "units": "1000.50", "unit_price_cents": 100000})
