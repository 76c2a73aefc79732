"""A funder's invoice or credit note as a PDF a person reads (fpdf2, A4, in Finnish): the seller with its
business ID, the buyer, the invoice's number, date, due date and payment terms, the invoicing period, one
line per service category, the total, the VAT exemption, and the bank transfer form's facts (the
operator's IBAN and BIC, the Finnish reference grouped as it is printed, the RF reference, the due date,
the amount). Dates ``1.6.2026``, money ``1 234,50 €``. The core fonts' Windows-1252 carries €, § and the
Finnish and Swedish letters."""
from __future__ import annotations

from fpdf import FPDF
from stdnum import iban as ibans

from .tables import FunderInvoice
from .finvoice import VAT_FREE_TEXT
from .formats import category_name, date_fi, euros_fi
from .issuing import CREDIT_NOTE, Seller, invoicing_period
from .references import grouped

_REASONS = {"wrong_amount": "virheellinen summa", "wrong_buyer": "väärä laskutettava", "duplicate": "kaksoislasku",
            "corrections_after_issue": "tilitysten korjaukset laskun jälkeen", "other": "muu syy"}


def build(invoice: FunderInvoice, seller: Seller, credited: FunderInvoice | None = None) -> bytes:
    credit = invoice.kind == CREDIT_NOTE
    pdf = FPDF(format="A4")
    pdf.core_fonts_encoding = "windows-1252"
    pdf.set_title(f"{'Hyvityslasku' if credit else 'Lasku'} {invoice.number}")
    pdf.set_author(seller.name)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(0, 10, "HYVITYSLASKU" if credit else "LASKU", new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("helvetica", "", 10)
    top = pdf.get_y()
    for text in (seller.name, seller.street, f"{seller.postcode} {seller.town}", f"Y-tunnus {seller.business_id}"):
        pdf.cell(90, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("helvetica", "B", 10)
    pdf.cell(90, 5, "Laskutettava", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    pdf.cell(90, 5, invoice.buyer_name[:60], new_x="LMARGIN", new_y="NEXT")
    pdf.cell(90, 5, f"Rahoittajan tunnus {invoice.funder_id}", new_x="LMARGIN", new_y="NEXT")
    bottom = pdf.get_y()

    start, end = invoicing_period(invoice.month)
    facts = [("Laskun numero", str(invoice.number)), ("Laskun päivämäärä", date_fi(invoice.invoice_date))]
    if credit:
        facts.append(("Hyvittää laskun", f"{credited.number} ({date_fi(credited.invoice_date)})" if credited else "–"))
        if invoice.credit_reason:
            facts.append(("Hyvityksen syy", _REASONS.get(invoice.credit_reason, invoice.credit_reason)))
    else:
        facts += [("Maksuehto", f"{invoice.payment_terms_days} päivää netto"), ("Eräpäivä", date_fi(invoice.due_date))]
    facts += [("Laskutuskausi", f"{date_fi(start)}–{date_fi(end)}"), ("Viitenumero", grouped(invoice.reference)),
              ("RF-viite", invoice.rf_reference)]
    pdf.set_xy(110, top)
    for label, value in facts:
        pdf.set_x(110)
        pdf.cell(40, 5, label)
        pdf.cell(50, 5, value, new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(bottom, pdf.get_y()) + 8)

    # the lines
    widths = (90, 30, 60)
    pdf.set_font("helvetica", "B", 10)
    for w, text, align in zip(widths, ("Palvelu", "Veloituksia", "Summa"), ("L", "R", "R")):
        pdf.cell(w, 7, text, border="B", align=align)
    pdf.ln()
    pdf.set_font("helvetica", "", 10)
    for line in invoice.lines:
        pdf.cell(widths[0], 6, category_name(line["category"]))
        pdf.cell(widths[1], 6, str(line["charge_count"]), align="R")
        pdf.cell(widths[2], 6, euros_fi(line["gross_cents"]), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "B", 10)
    pdf.cell(widths[0] + widths[1], 7, "Yhteensä (ALV 0 %)", border="T")
    pdf.cell(widths[2], 7, euros_fi(invoice.total_cents), border="T", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)
    pdf.cell(0, 5, VAT_FREE_TEXT + ".", new_x="LMARGIN", new_y="NEXT")
    fees = sum(line["fee_cents"] for line in invoice.lines)
    pdf.cell(0, 5, f"Välityspalkkio {euros_fi(fees)} on vähennetty palveluntuottajien tilityksistä.",
             new_x="LMARGIN", new_y="NEXT")
    if credit:
        pdf.cell(0, 5, "Hyvityslasku: ei maksettavaa.", new_x="LMARGIN", new_y="NEXT")

    # the bank transfer's facts (the Finnish giro form's fields)
    pdf.ln(8)
    pdf.set_font("helvetica", "B", 10)
    pdf.cell(0, 7, "Tilisiirto", border="B", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    transfer = [("Saajan tilinumero", f"{ibans.format(seller.iban)}  BIC {seller.bic or '–'}"),
                ("Saaja", seller.name), ("Viitenumero", grouped(invoice.reference)),
                ("Eräpäivä", date_fi(invoice.due_date)), ("Euro", euros_fi(max(invoice.total_cents, 0)))]
    for label, value in transfer:
        pdf.cell(45, 6, label)
        pdf.cell(0, 6, value, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
