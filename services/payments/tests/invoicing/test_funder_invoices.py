"""Funders' invoices a Finnish office accepts, on PostgreSQL and the real RabbitMQ: issued for an ended
month from the operator's gapless number series, with invoice and due dates, payment terms, a Finnish
reference and its RF form, the operator's business ID and IBAN; served as a PDF (its text read back with
pypdf) and as a Finvoice 3.0 e-invoice (validated against Finance Finland's Finvoice 3.0 XSD, its elements'
order and its totals checked against the month's figures and the ledger to the cent); corrected by a
credit note naming the invoice; numbers with no gap when issues race or are refused."""
from __future__ import annotations

import asyncio
import hashlib
import io
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from pypdf import PdfReader
from stdnum import iso11649

from payments.invoicing import finvoice, issuing, pdf
from payments.invoicing.references import finnish_reference, is_finnish_reference
from payments.models import FunderInvoice
from payments.settings import PaymentsSettings
from seteli_shared.auth import mint
from seteli_shared.events import FunderRegistered

XSD_FILE = Path(__file__).parent / "Finvoice3.0.xsd"
XSD_SHA256 = "169d28a5918654e998b56535cedc4146b5f1ce54078e64bce3d9524aaca5c6ed"
XSD = etree.XMLSchema(etree.parse(str(XSD_FILE)))
EINVOICE = {"091": "003702012566@TAPIFI2S"}


def funder_finance(funder_id: str) -> dict:
    return {"Authorization": f"Bearer {mint('t:ff', ['funder_finance'], funder_id=funder_id)}"}


@pytest.fixture
def live_settings() -> dict:
    return {"funder_einvoice_addresses": EINVOICE}


def test_the_schema_is_finance_finlands_file() -> None:
    assert hashlib.sha256(XSD_FILE.read_bytes()).hexdigest() == XSD_SHA256


@pytest.mark.parametrize("base, reference", [(123, "1232"), (123456, "1234561"), (1000, "10003")])
def test_finnish_reference_check_digit(base: int, reference: str) -> None:
    assert finnish_reference(base) == reference and is_finnish_reference(reference)
    assert not is_finnish_reference(reference[:-1] + str((int(reference[-1]) + 1) % 10))


def _euros(text: str) -> int:
    """A Finvoice amount (decimal comma) in cents."""
    return int(Decimal(text.replace(",", ".")) * 100)


def _pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    return text.replace("\xa0", " ").replace("\u202f", " ")


async def _month_of_settlements(live) -> dict:  # noqa: ANN001
    """June 2026: two providers' charges for funder 091 settled; the month's figures as JSON."""
    await live.publish(FunderRegistered(funder_id="091", name="Helsingin kaupunki", kind="municipality",
                                        operator_fee_rate=Decimal("0.05"),
                                        registered_at=datetime(2026, 1, 1, tzinfo=timezone.utc)), source="registry")
    for n, (provider, units) in enumerate((("p-inv-a", "4"), ("p-inv-b", "2,5"))):
        voucher = await live.voucher(provider, n, "100")
        await live.charge(provider, voucher, f"inv-{n}-1", units.replace(",", "."))
        await live.charge(provider, voucher, f"inv-{n}-2", "1")
    await live.settle()
    r = await live.client.get("/funders/091/invoices/2026-06")
    assert r.status_code == 200, r.text
    return r.json()


async def test_invoice_pdf_finvoice_credit_note_and_gapless_numbers(live) -> None:  # noqa: ANN001
    figures = await _month_of_settlements(live)
    gross = figures["total"]["gross_cents"]
    assert gross == (400 + 100 + 250 + 100) * 25  # 8.5 h at 25.00 EUR
    assert (await live.balances())["funder:091:voucher_spend"] == gross  # what the ledger says the funder owes

    # June is not over on 20 June: no invoice, and no number taken
    r = await live.client.post("/funder-invoices", json={"funder_id": "091", "month": "2026-06"})
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "month_not_over")
    live.clock.at = datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc)
    r = await live.client.post("/funder-invoices", json={"funder_id": "091", "month": "2026-05"})
    assert (r.status_code, r.json()["error"]["reason"]) == (409, "nothing_to_invoice")
    r = await live.client.post("/funder-invoices", json={"funder_id": "091", "month": "2026-06"})
    assert r.status_code == 201, r.text
    invoice = r.json()
    assert (invoice["number"], invoice["kind"], invoice["invoice_date"], invoice["due_date"],
            invoice["payment_terms_days"]) == (1000, "invoice", "2026-07-01", "2026-07-15", 14)
    assert invoice["reference"] == "10003" and is_finnish_reference(invoice["reference"])
    assert iso11649.is_valid(invoice["rf_reference"]) and invoice["rf_reference"].endswith("10003")
    assert (invoice["total_cents"], invoice["buyer_name"], invoice["seller_business_id"]) == (
        gross, "Helsingin kaupunki", "2617416-4")
    assert [x["gross_cents"] for x in invoice["lines"]] == [x["gross_cents"] for x in figures["lines"]]
    r = await live.client.post("/funder-invoices", json={"funder_id": "091", "month": "2026-06"})
    assert (r.status_code, r.json()["id"], r.json()["number"]) == (200, invoice["id"], 1000), "a retry: the same"

    # the PDF a person reads
    r = await live.client.get(f"/funder-invoices/{invoice['id']}?format=pdf")
    assert (r.status_code, r.headers["content-type"]) == (200, "application/pdf"), r.text
    text = _pdf_text(r.content)
    for expected in ("LASKU", "Laskun numero 1000", "Laskun päivämäärä 1.7.2026", "Eräpäivä 15.7.2026",
                     "Maksuehto 14 päivää netto", "Laskutuskausi 1.6.2026–30.6.2026", "Viitenumero 10003",
                     f"RF-viite {invoice['rf_reference']}", "Y-tunnus 2617416-4", "Helsingin kaupunki",
                     "Kotihoito", "212,50 €", "Yhteensä (ALV 0 %) 212,50 €", "AVL 34 §",
                     "FI49 5000 9420 0287 30", "BIC OKOYFIHH", "Euro 212,50 €"):
        assert expected in text, (expected, text)
    assert (await live.client.get(f"/funder-invoices/{invoice['id']}", headers={"accept": "application/pdf"})
            ).content.startswith(b"%PDF-")

    # the Finvoice 3.0 e-invoice
    r = await live.client.get(f"/funder-invoices/{invoice['id']}?format=finvoice")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml"), r.text
    doc = etree.fromstring(r.content)
    XSD.assertValid(doc)
    assert (doc.tag, doc.get("Version")) == ("Finvoice", "3.0")
    top = [el.tag for el in doc]
    assert top[:4] == ["MessageTransmissionDetails", "SellerPartyDetails", "SellerInformationDetails",
                       "BuyerPartyDetails"]
    assert top[4] == "InvoiceDetails" and top[-1] == "EpiDetails"
    assert top[5:-1] == ["InvoiceRow"] * len(figures["lines"])
    assert doc.findtext("MessageTransmissionDetails/MessageReceiverDetails/ToIdentifier") == "003702012566"
    assert doc.findtext("MessageTransmissionDetails/MessageSenderDetails/FromIdentifier") == "003726174164"
    assert doc.findtext("SellerPartyDetails/SellerPartyIdentifier") == "2617416-4"
    assert doc.findtext("SellerInformationDetails/SellerAccountDetails/SellerAccountID") == "FI4950009420028730"
    assert doc.findtext("BuyerPartyDetails/BuyerOrganisationName") == "Helsingin kaupunki"
    d = doc.find("InvoiceDetails")
    assert [d.findtext(t) for t in ("InvoiceTypeCode", "InvoiceNumber", "InvoiceDate")] == ["INV01", "1000", "20260701"]
    assert d.find("InvoiceDate").get("Format") == "CCYYMMDD"
    total = d.find("InvoiceTotalVatExcludedAmount")
    assert (total.text, total.get("AmountCurrencyIdentifier")) == ("212,50", "EUR")
    assert _euros(d.findtext("InvoiceTotalVatIncludedAmount")) == _euros(d.findtext("VatSpecificationDetails/VatBaseAmount")) == gross
    assert _euros(d.findtext("InvoiceTotalVatAmount")) == 0 and d.findtext("VatSpecificationDetails/VatRatePercent") == "0"
    assert "AVL 34 §" in d.findtext("VatSpecificationDetails/VatFreeText")
    assert d.findtext("PaymentTermsDetails/InvoiceDueDate") == "20260715"
    assert sum(_euros(row.findtext("RowAmount")) for row in doc.findall("InvoiceRow")) == gross
    epi = doc.find("EpiDetails/EpiPaymentInstructionDetails")
    ref = epi.find("EpiRemittanceInfoIdentifier")
    assert (ref.text, ref.get("IdentificationSchemeName")) == (invoice["rf_reference"], "ISO")
    assert _euros(epi.findtext("EpiInstructedAmount")) == gross and epi.findtext("EpiDateOptionDate") == "20260715"

    # the funder's own staff read it; another funder's do not
    assert (await live.client.get(f"/funder-invoices/{invoice['id']}", headers=funder_finance("091"))).status_code == 200
    assert (await live.client.get(f"/funder-invoices/{invoice['id']}", headers=funder_finance("092"))).status_code == 404
    assert (await live.client.get("/funder-invoices", headers=funder_finance("092"))).json() == []
    assert (await live.client.post("/funder-invoices", json={"funder_id": "091", "month": "2026-06"},
                                   headers=funder_finance("091"))).status_code == 403

    # a credit note for the whole invoice, naming it; then June is invoiced again
    r = await live.client.post(f"/funder-invoices/{invoice['id']}/credit-note", json={"reason": "wrong_amount"})
    assert r.status_code == 201, r.text
    note = r.json()
    assert (note["number"], note["kind"], note["total_cents"], note["credits_invoice_id"]) == (
        1001, "credit_note", -gross, invoice["id"])
    again = await live.client.post(f"/funder-invoices/{invoice['id']}/credit-note", json={"reason": "duplicate"})
    assert (again.status_code, again.json()["id"], again.json()["credit_reason"]) == (200, note["id"], "wrong_amount")
    doc = etree.fromstring((await live.client.get(f"/funder-invoices/{note['id']}?format=finvoice")).content)
    XSD.assertValid(doc)
    d = doc.find("InvoiceDetails")
    assert [d.findtext(t) for t in ("InvoiceTypeCode", "InvoiceNumber", "OriginalInvoiceNumber")] == [
        "INV02", "1001", "1000"]
    assert _euros(d.findtext("InvoiceTotalVatIncludedAmount")) == -gross
    text = _pdf_text((await live.client.get(f"/funder-invoices/{note['id']}?format=pdf")).content)
    assert "HYVITYSLASKU" in text and "Hyvittää laskun 1000 (1.7.2026)" in text and "-212,50 €" in text, text

    # issues racing for the month: one invoice, and the refused ones leave no gap in the series
    answers = await asyncio.gather(*(live.client.post("/funder-invoices", json={"funder_id": "091",
                                                                                "month": "2026-06"})
                                     for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = (await live.client.get("/funder-invoices", headers=funder_finance("091"))).json()
    assert [(i["number"], i["kind"], i["credited_by"] is not None) for i in listed] == [
        (1000, "invoice", True), (1001, "credit_note", False), (1002, "invoice", False)]


def test_finvoice_with_the_finnish_reference_and_no_einvoice_address() -> None:
    settings = PaymentsSettings()
    invoice = FunderInvoice(
        id="9b2f4f1e-0d7e-4f39-9f43-5d7c1c1a0b11", series="2617416-4", number=1234, kind="invoice", funder_id="049",
        buyer_name="Espoon kaupunki", month="2026-11", invoice_date=datetime(2026, 12, 1).date(),
        due_date=datetime(2026, 12, 15).date(), payment_terms_days=14, reference=finnish_reference(1234),
        rf_reference="RF" + "00", total_cents=123450,
        lines=[{"category": "home_care", "charge_count": 3, "gross_cents": 123450, "fee_cents": 6173,
                "net_cents": 117277}], created_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    doc = etree.fromstring(finvoice.build(invoice, issuing.Seller.of(settings), reference_scheme="SPY"))
    XSD.assertValid(doc)
    assert doc[0].tag == "SellerPartyDetails"  # no e-invoice address known: no transmission details
    ref = doc.find("EpiDetails/EpiPaymentInstructionDetails/EpiRemittanceInfoIdentifier")
    assert (ref.text, ref.get("IdentificationSchemeName")) == ("12344", "SPY")
    assert doc.findtext("InvoiceDetails/InvoiceTotalVatExcludedAmount") == "1234,50"
    text = _pdf_text(pdf.build(invoice, issuing.Seller.of(settings)))
    for expected in ("Yhteensä (ALV 0 %) 1 234,50 €", "Eräpäivä 15.12.2026", "Laskutuskausi 1.11.2026–30.11.2026",
                     "Viitenumero 12344", "Espoon kaupunki"):
        assert expected in text, (expected, text)
