"""Funders' invoices as a Finnish office takes them: issued for a month whose settlements are all made,
numbered from the operator's gapless series in the transaction that writes the invoice, dated, due after the
payment terms, with a Finnish reference and the same as an RF creditor reference; corrected only by a credit
note that credits the whole invoice and names it (then the month may be invoiced again). What is issued
never changes: the documents (``pdf``, ``finvoice``) are made from the row as it was written."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from seteli_shared import audit
from seteli_shared.auth import Principal, TenantScope
from seteli_shared.clock import Clock
from seteli_shared.db import unit_of_work
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.ids import new_id
from seteli_shared.logging import get_logger
from seteli_shared.municipalities import municipality

from ..models import FunderView
from .tables import FunderInvoice, InvoiceSeries
from . import references
from .invoices import month_bounds, monthly_invoice_in

Sessions = async_sessionmaker[AsyncSession]
log = get_logger(__name__)

INVOICE, CREDIT_NOTE = "invoice", "credit_note"
#: why an invoice is credited (codes: no free text, which could carry personal data)
CREDIT_REASONS = ("wrong_amount", "wrong_buyer", "duplicate", "corrections_after_issue", "other")


@dataclass(frozen=True)
class Seller:
    """The operator as its invoices name it (settings)."""

    name: str
    business_id: str
    street: str
    postcode: str
    town: str
    iban: str
    bic: str | None

    @classmethod
    def of(cls, settings) -> "Seller":  # noqa: ANN001
        return cls(settings.payer_name, settings.operator_business_id, settings.operator_street,
                   settings.operator_postcode, settings.operator_town, settings.payer_iban, settings.payer_bic)


async def take_number(session: AsyncSession, series: str, start: int) -> int:
    """The series' next number, its row locked until the caller's transaction ends: a number is used
    exactly when the transaction that took it commits (a rollback gives it back), so the series has no gaps."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(InvoiceSeries).values(series=series, next_number=start)
                          .on_conflict_do_nothing(index_elements=["series"]))
    taken = await session.execute(update(InvoiceSeries).where(InvoiceSeries.series == series)
                                  .values(next_number=InvoiceSeries.next_number + 1)
                                  .returning(InvoiceSeries.next_number))
    return int(taken.scalar_one()) - 1


async def buyer_name(session: AsyncSession, funder_id: str) -> str:
    """The funder's name as registered; else its municipality's (by the code); else its id."""
    view = await session.get(FunderView, funder_id)
    if view is not None and view.name:
        return view.name
    known = municipality(funder_id)
    return known.name("fi") if known else funder_id


class AlreadyIssued(Exception):
    """The month's invoice (not credited) exists: the answer to an issue is it (a retry changes nothing)."""

    def __init__(self, invoice: FunderInvoice):
        self.invoice = invoice


async def issue_invoice(sessions: Sessions, clock: Clock, principal: Principal, settings,  # noqa: ANN001
                        funder_id: str, month: str) -> tuple[FunderInvoice, bool]:
    """The funder's invoice for the month, once the month is over, and whether it was made now: the
    month's invoice that is not credited is answered again (a retry). 409 ``month_not_over``,
    ``nothing_to_invoice``."""
    _, end = month_bounds(month)
    today = clock.today()
    seller = Seller.of(settings)
    try:
        async with unit_of_work(sessions) as session:
            # the series first: two issues of one month are serialised by its lock (the second sees the first)
            number = await take_number(session, seller.business_id, settings.invoice_number_start)
            existing = (await session.execute(select(FunderInvoice).where(
                FunderInvoice.funder_id == funder_id, FunderInvoice.month == month, FunderInvoice.kind == INVOICE,
                FunderInvoice.credited_by.is_(None)))).scalars().first()
            if existing is not None:  # the number goes back with the rollback
                session.expunge(existing)  # kept as read: the rollback does not expire it
                raise AlreadyIssued(existing)
            if end.date() > today:
                raise Conflict("month_not_over", "a month is invoiced after it has ended", month=month,
                               first_day=end.date().isoformat())
            invoice = await _issue(session, clock, principal, settings, seller, number, funder_id, month)
    except AlreadyIssued as issued:
        return issued.invoice, False
    log.info("funder_invoice.issued", invoice_id=invoice.id, number=invoice.number, funder_id=funder_id,
             month=month, total_cents=invoice.total_cents)
    return invoice, True


async def _issue(session: AsyncSession, clock: Clock, principal: Principal, settings, seller: Seller,  # noqa: ANN001
                 number: int, funder_id: str, month: str) -> FunderInvoice:
    today = clock.today()
    figures = await monthly_invoice_in(session, funder_id, month)
    if not figures.lines or figures.totals.gross_cents <= 0:
        raise Conflict("nothing_to_invoice", "nothing was settled for the funder in the month", month=month)
    reference = references.finnish_reference(number)
    invoice = FunderInvoice(
        id=new_id(), series=seller.business_id, number=number, kind=INVOICE, funder_id=funder_id,
        buyer_name=await buyer_name(session, funder_id), month=month, invoice_date=today,
        due_date=today + timedelta(days=settings.invoice_payment_terms_days),
        payment_terms_days=settings.invoice_payment_terms_days, reference=reference,
        rf_reference=references.rf_of(reference), total_cents=figures.totals.gross_cents,
        lines=[vars(line) for line in figures.lines], created_at=clock.now())
    session.add(invoice)
    await session.flush()
    await audit.record(session, principal, "funder_invoice.issue", "funder_invoice", invoice.id, funder_id)
    return invoice


async def credit_invoice(sessions: Sessions, clock: Clock, principal: Principal, settings,  # noqa: ANN001
                         invoice_id: str, reason: str) -> tuple[FunderInvoice, bool]:
    """A credit note crediting the whole invoice (its lines negated), numbered from the same series; the
    invoice is marked credited. Crediting it again answers its credit note (and whether it was made now);
    a credit note is not credited (404)."""
    seller = Seller.of(settings)
    today = clock.today()
    try:
        async with unit_of_work(sessions) as session:
            number = await take_number(session, seller.business_id, settings.invoice_number_start)
            original = await session.get(FunderInvoice, invoice_id, with_for_update=True)
            if original is None or original.kind != INVOICE:
                raise NotFound("funder_invoice")
            if original.credited_by is not None:  # the number goes back with the rollback
                note = await session.get(FunderInvoice, original.credited_by)
                session.expunge(note)
                raise AlreadyIssued(note)
            note = await _credit(session, clock, principal, seller, number, original, reason, today)
    except AlreadyIssued as issued:
        return issued.invoice, False
    log.info("funder_invoice.credited", invoice_id=invoice_id, credit_note_id=note.id, number=note.number,
             reason=reason)
    return note, True


async def _credit(session: AsyncSession, clock: Clock, principal: Principal, seller: Seller, number: int,
                  original: FunderInvoice, reason: str, today: date) -> FunderInvoice:
    reference = references.finnish_reference(number)
    note = FunderInvoice(
        id=new_id(), series=seller.business_id, number=number, kind=CREDIT_NOTE, funder_id=original.funder_id,
        buyer_name=original.buyer_name, month=original.month, invoice_date=today, due_date=today,
        payment_terms_days=0, reference=reference, rf_reference=references.rf_of(reference),
        total_cents=-original.total_cents,
        lines=[{**line, **{k: -line[k] for k in ("charge_count", "gross_cents", "fee_cents", "net_cents")}}
               for line in original.lines],
        credits_invoice_id=original.id, credit_reason=reason, created_at=clock.now())
    session.add(note)
    original.credited_by = note.id
    session.add(original)
    await session.flush()
    await audit.record(session, principal, "funder_invoice.credit", "funder_invoice", original.id,
                       original.funder_id)
    return note


async def get_invoice(sessions: Sessions, invoice_id: str) -> tuple[FunderInvoice, FunderInvoice | None]:
    """The invoice (or credit note) and, for a credit note, the invoice it credits."""
    async with sessions() as session:
        invoice = await session.get(FunderInvoice, invoice_id)
        if invoice is None:
            raise NotFound("funder_invoice")
        credited = await session.get(FunderInvoice, invoice.credits_invoice_id) if invoice.credits_invoice_id else None
    return invoice, credited


async def list_invoices(sessions: Sessions, scope: TenantScope, funder_id: str | None) -> list[FunderInvoice]:
    """The caller's funders' invoices and credit notes, by number."""
    q = scope.restrict(select(FunderInvoice), funder=FunderInvoice.funder_id)
    if funder_id is not None:
        q = q.where(FunderInvoice.funder_id == funder_id)
    async with sessions() as session:
        return list((await session.execute(q.order_by(FunderInvoice.series, FunderInvoice.number)
                                           .limit(1000))).scalars())


def invoicing_period(month: str) -> tuple[date, date]:
    start, end = month_bounds(month)
    return start.date(), end.date() - timedelta(days=1)
