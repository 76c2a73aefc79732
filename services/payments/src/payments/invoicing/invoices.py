"""A funder's monthly invoice: what was settled for it in a calendar month (by the settlement's time,
UTC), by service category, with gross, the operator's fees and net, less the corrections of earlier
settlements that the month's settlements offset. VAT-exempt (Finnish VAT Act 34 §)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared.errors import DomainError
from seteli_shared.money import euros
from seteli_shared.schemas import DATE_MAX, DATE_MIN

from ..charging import domain
from ..models import Charge, ChargeCorrection, Settlement

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class InvoiceLine:
    category: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int


@dataclass(frozen=True)
class Invoice:
    funder_id: str
    month: str
    lines: list[InvoiceLine]

    @property
    def totals(self) -> InvoiceLine:
        return InvoiceLine("total", sum(x.charge_count for x in self.lines), sum(x.gross_cents for x in self.lines),
                           sum(x.fee_cents for x in self.lines), sum(x.net_cents for x in self.lines))


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of ``YYYY-MM`` (``invalid_month`` otherwise; a month
    outside the dates of business, ``schemas.DATE_MIN``..``DATE_MAX``, is ``date_out_of_range``: 9999-12 had
    no next month to end at)."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = date(year, mon, 1)
    except ValueError:
        raise DomainError("invalid_month", "the month is YYYY-MM") from None
    if not DATE_MIN <= start <= DATE_MAX:
        raise DomainError("date_out_of_range", f"a month from {DATE_MIN:%Y-%m} to {DATE_MAX:%Y-%m}")
    end = date(year + mon // 12, mon % 12 + 1, 1)
    return (datetime.combine(start, time.min, tzinfo=timezone.utc),
            datetime.combine(end, time.min, tzinfo=timezone.utc))


async def monthly_invoice(sessions: Sessions, funder_id: str, month: str) -> Invoice:
    month_bounds(month)  # a bad month is refused before a connection is taken
    async with sessions() as session:
        return await monthly_invoice_in(session, funder_id, month)


async def monthly_invoice_in(session: AsyncSession, funder_id: str, month: str) -> Invoice:
    """The month's figures read in the caller's transaction (``issuing`` writes an invoice from them)."""
    start, end = month_bounds(month)
    q = (select(Charge.category, func.count(Charge.id), func.coalesce(func.sum(Charge.amount_cents), 0),
                func.coalesce(func.sum(Charge.fee_cents), 0), func.coalesce(func.sum(Charge.net_cents), 0))
         .join(Settlement, Settlement.id == Charge.settlement_id)
         .where(Settlement.funder_id == funder_id, Charge.status == domain.SETTLED,
                Settlement.created_at >= start, Settlement.created_at < end)
         .group_by(Charge.category).order_by(Charge.category))
    # corrections of earlier settlements that this month's settlements offset: taken off their category
    k = ChargeCorrection
    corrected = (select(k.category, func.sum(k.amount_cents), func.sum(k.fee_cents), func.sum(k.net_cents))
                 .join(Settlement, Settlement.id == k.offset_settlement_id)
                 .where(Settlement.funder_id == funder_id, Settlement.created_at >= start, Settlement.created_at < end)
                 .group_by(k.category))
    rows = (await session.execute(q)).all()
    less = {c: (int(g), int(f), int(n)) for c, g, f, n in (await session.execute(corrected)).all()}
    lines = {c: InvoiceLine(c, int(n), int(g), int(f), int(net)) for c, n, g, f, net in rows}
    for c, (g, f, n) in less.items():
        line = lines.get(c, InvoiceLine(c, 0, 0, 0, 0))
        lines[c] = InvoiceLine(c, line.charge_count, line.gross_cents - g, line.fee_cents - f, line.net_cents - n)
    return Invoice(funder_id, month, [lines[c] for c in sorted(lines)])


def to_csv(invoice: Invoice) -> str:
    """One row per category and a total row; amounts in euros with a dot (and cents beside them)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["funder_id", "month", "category", "charge_count", "gross_eur", "fee_eur", "net_eur",
                "gross_cents", "fee_cents", "net_cents", "vat"])
    for line in [*invoice.lines, invoice.totals]:
        w.writerow([invoice.funder_id, invoice.month, line.category, line.charge_count, euros(line.gross_cents),
                    euros(line.fee_cents), euros(line.net_cents), line.gross_cents, line.fee_cents, line.net_cents,
                    "exempt (AVL 34 §)"])
    return out.getvalue()
