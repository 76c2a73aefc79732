"""What the money documents' changes cost, pure (no database, no broker), as ratios against a raw baseline
measured in the same run:

1. the daily run's payout decision with the banking calendar (TARGET2 + Finnish bank holidays) against the
   same rule without a calendar, for ``--groups`` provider-funder groups of ``--charges`` charges each;
2. reading the month's CSV (``csv_format.rows``) of ``--lines`` lines with an unknown free-text column
   (ignored, one warning) against the same file without it, and both against Python's ``csv.reader`` over
   the same bytes (the raw baseline);
3. an invoice's documents: the Finvoice 3.0 XML and the PDF of a ten-category invoice, per document.

Prints one line per figure and a final JSON line."""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

# this folder's payments.py (a benchmark) is not the payments service
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from payments.charging import csv_format  # noqa: E402
from payments.invoicing import finvoice, issuing, pdf
from payments.models import FunderInvoice
from payments.settings import PaymentsSettings
from payments.settlement import domain
from payments.settlement.banking_days import BankingCalendar
from seteli_shared.catalogue import CATEGORIES


def timed(fn, repeat: int = 3) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def payout_decisions(groups: int, charges: int) -> dict:
    rules, cal = domain.PayoutRules(), BankingCalendar(("FI",))
    start = date(2026, 3, 1)
    days = [start + timedelta(days=i) for i in range(60)]  # runs over Easter 2026
    accepted = [[datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(hours=g + c) for c in range(charges)]
                for g in range(groups)]

    def run(execution_of) -> None:  # noqa: ANN001
        for day in days:
            for group in accepted:
                domain.decide_payout(2000, group, day, rules, execution_of=execution_of)

    raw = timed(lambda: run(None))
    with_calendar = timed(lambda: run(cal.next_banking_day))
    decisions = len(days) * groups
    return {"decisions": decisions, "raw_us": raw / decisions * 1e6, "calendar_us": with_calendar / decisions * 1e6,
            "ratio": with_calendar / raw}


def csv_files(lines: int) -> dict:
    plain = ["voucher_code;provider_reference;service_date;units;unit_price"]
    extra = ["voucher_code;provider_reference;Lisätieto;service_date;units;unit_price"]
    for i in range(lines):
        plain.append(f"7KQ2M9XH4D=;ref-{i};1.6.2026;1,5;27,50")
        extra.append(f"7KQ2M9XH4D=;ref-{i};aamukäynti {i % 7};1.6.2026;1,5;27,50")
    plain_b, extra_b = ("\r\n".join(plain) + "\r\n").encode(), ("\r\n".join(extra) + "\r\n").encode()

    def chunks(data: bytes):  # noqa: ANN202
        return (data[i:i + 65536] for i in range(0, len(data), 65536))

    def read(data: bytes) -> None:
        warnings: list = []
        assert sum(1 for _ in csv_format.rows(chunks(data), warnings)) == lines

    raw = timed(lambda: sum(1 for _ in csv.reader(io.StringIO(extra_b.decode()), delimiter=";")))
    known = timed(lambda: read(plain_b))
    unknown = timed(lambda: read(extra_b))
    return {"lines": lines, "raw_csv_reader_s": raw, "known_columns_s": known, "unknown_column_s": unknown,
            "unknown_vs_known": unknown / known, "unknown_vs_raw": unknown / raw}


def documents(repeat: int) -> dict:
    seller = issuing.Seller.of(PaymentsSettings())
    invoice = FunderInvoice(
        id="9b2f4f1e-0d7e-4f39-9f43-5d7c1c1a0b11", series="2617416-4", number=1000, kind="invoice", funder_id="091",
        buyer_name="Helsingin kaupunki", month="2026-06", invoice_date=date(2026, 7, 1), due_date=date(2026, 7, 15),
        payment_terms_days=14, reference="10003", rf_reference="RF6810003", total_cents=10 * 123450,
        lines=[{"category": c, "charge_count": 40, "gross_cents": 123450, "fee_cents": 6173, "net_cents": 117277}
               for c in list(CATEGORIES)[:10]], created_at=datetime(2026, 7, 1, tzinfo=timezone.utc))
    xml = timed(lambda: [finvoice.build(invoice, seller) for _ in range(repeat)]) / repeat
    made = timed(lambda: [pdf.build(invoice, seller) for _ in range(repeat)]) / repeat
    raw = timed(lambda: [json.dumps(invoice.model_dump(mode="json")) for _ in range(repeat)]) / repeat
    return {"finvoice_ms": xml * 1e3, "pdf_ms": made * 1e3, "json_ms": raw * 1e3,
            "finvoice_vs_json": xml / raw, "pdf_vs_json": made / raw}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=500)
    p.add_argument("--charges", type=int, default=20)
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--documents", type=int, default=50)
    args = p.parse_args()
    figures = {"payout": payout_decisions(args.groups, args.charges), "csv": csv_files(args.lines),
               "documents": documents(args.documents)}
    d, c, x = figures["payout"], figures["csv"], figures["documents"]
    print(f"payout decision: {d['raw_us']:.2f} µs without a calendar, {d['calendar_us']:.2f} µs with it "
          f"({d['ratio']:.2f}x, {d['decisions']} decisions)")
    print(f"CSV of {c['lines']} lines: csv.reader {c['raw_csv_reader_s']:.3f} s, known columns "
          f"{c['known_columns_s']:.3f} s, with an ignored column {c['unknown_column_s']:.3f} s "
          f"({c['unknown_vs_known']:.2f}x known, {c['unknown_vs_raw']:.1f}x raw)")
    print(f"invoice documents: Finvoice {x['finvoice_ms']:.2f} ms, PDF {x['pdf_ms']:.2f} ms, JSON {x['json_ms']:.3f} ms "
          f"({x['finvoice_vs_json']:.0f}x and {x['pdf_vs_json']:.0f}x JSON)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
