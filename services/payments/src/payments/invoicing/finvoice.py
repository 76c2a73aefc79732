"""A funder's invoice or credit note as a Finvoice 3.0 e-invoice (Finance Finland's XML for Finnish
purchase-invoice systems), pure: the elements in the order of the Finvoice 3.0 schema (its XSD is in the
tests): MessageTransmissionDetails, SellerPartyDetails, SellerInformationDetails, BuyerPartyDetails,
InvoiceDetails (INV01 an invoice, INV02 a credit note; amounts with a decimal comma; VAT 0 %, exempt, with
its VatFreeText; the payment terms and due date), one InvoiceRow per service category, EpiDetails (the
bank transfer: the operator's IBAN and BIC, the amount, the due date and the reference: Finnish ``SPY``
or RF ``ISO``)."""
from __future__ import annotations

from xml.etree import ElementTree as ET

from stdnum.fi import ytunnus

from .tables import FunderInvoice
from .formats import category_name, finvoice_amount, finvoice_date
from .issuing import CREDIT_NOTE, Seller, invoicing_period

#: the VAT exemption as the invoice states it (Finvoice allows 70 characters)
VAT_FREE_TEXT = "Arvonlisäveroton sosiaali- ja terveyspalvelu (AVL 34 §)"
#: the Finvoice code of an exempt VAT category (UNTDID 5305)
VAT_EXEMPT_CODE = "E"


def ovt(business_id: str) -> str:
    """The OVT e-invoice address of a Finnish organisation: ``0037`` and its business ID's digits."""
    return "0037" + ytunnus.compact(business_id)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _amount(parent: ET.Element, tag: str, cents: int) -> ET.Element:
    return _sub(parent, tag, finvoice_amount(cents), AmountCurrencyIdentifier="EUR")


def build(invoice: FunderInvoice, seller: Seller, *, credited: FunderInvoice | None = None,
          sender_intermediator: str | None = None, receiver: tuple[str, str] | None = None,
          reference_scheme: str = "SPY") -> bytes:
    """The Finvoice 3.0 document (UTF-8). ``receiver``: the funder's e-invoice address and its operator
    (intermediator): MessageTransmissionDetails is written when it is known. ``reference_scheme``: ``SPY``
    (the Finnish reference) or ``ISO`` (the RF creditor reference) in EpiRemittanceInfoIdentifier."""
    credit = invoice.kind == CREDIT_NOTE
    total = invoice.total_cents
    root = ET.Element("Finvoice", {"Version": "3.0"})
    if receiver is not None:
        mtd = _sub(root, "MessageTransmissionDetails")
        sender = _sub(mtd, "MessageSenderDetails")
        _sub(sender, "FromIdentifier", ovt(seller.business_id))
        _sub(sender, "FromIntermediator", sender_intermediator or seller.bic or "NOTPROVIDED")
        to = _sub(mtd, "MessageReceiverDetails")
        _sub(to, "ToIdentifier", receiver[0])
        _sub(to, "ToIntermediator", receiver[1])
        details = _sub(mtd, "MessageDetails")
        _sub(details, "MessageIdentifier", invoice.id.replace("-", "")[:48])
        _sub(details, "MessageTimeStamp", invoice.created_at.strftime("%Y-%m-%dT%H:%M:%S"))

    party = _sub(root, "SellerPartyDetails")
    _sub(party, "SellerPartyIdentifier", seller.business_id)
    _sub(party, "SellerOrganisationName", seller.name[:70])
    _sub(party, "SellerOrganisationTaxCode", "FI" + ytunnus.compact(seller.business_id))
    address = _sub(party, "SellerPostalAddressDetails")
    _sub(address, "SellerStreetName", seller.street[:35])
    _sub(address, "SellerTownName", seller.town[:35])
    _sub(address, "SellerPostCodeIdentifier", seller.postcode)
    _sub(address, "CountryCode", "FI")
    _sub(address, "CountryName", "Suomi")
    info = _sub(root, "SellerInformationDetails")
    _sub(info, "SellerHomeTownName", seller.town[:35])
    account = _sub(info, "SellerAccountDetails")
    _sub(account, "SellerAccountID", seller.iban, IdentificationSchemeName="IBAN")
    _sub(account, "SellerBic", seller.bic or "NOTPROVIDED", IdentificationSchemeName="BIC")

    buyer = _sub(root, "BuyerPartyDetails")
    _sub(buyer, "BuyerOrganisationName", invoice.buyer_name[:70])

    details = _sub(root, "InvoiceDetails")
    _sub(details, "InvoiceTypeCode", "INV02" if credit else "INV01")
    _sub(details, "InvoiceTypeText", "HYVITYSLASKU" if credit else "LASKU")
    _sub(details, "OriginCode", "Original")
    _sub(details, "InvoiceNumber", str(invoice.number))
    _sub(details, "InvoiceDate", finvoice_date(invoice.invoice_date), Format="CCYYMMDD")
    if credited is not None:
        _sub(details, "OriginalInvoiceNumber", str(credited.number))
        _sub(details, "OriginalInvoiceDate", finvoice_date(credited.invoice_date), Format="CCYYMMDD")
    start, end = invoicing_period(invoice.month)
    _sub(details, "InvoicingPeriodStartDate", finvoice_date(start), Format="CCYYMMDD")
    _sub(details, "InvoicingPeriodEndDate", finvoice_date(end), Format="CCYYMMDD")
    _sub(details, "BuyerReferenceIdentifier", f"{invoice.funder_id}/{invoice.month}")
    _amount(details, "RowsTotalVatExcludedAmount", total)
    _amount(details, "InvoiceTotalVatExcludedAmount", total)
    _amount(details, "InvoiceTotalVatAmount", 0)
    _amount(details, "InvoiceTotalVatIncludedAmount", total)
    vat = _sub(details, "VatSpecificationDetails")
    _amount(vat, "VatBaseAmount", total)
    _sub(vat, "VatRatePercent", "0")
    _sub(vat, "VatCode", VAT_EXEMPT_CODE)
    _amount(vat, "VatRateAmount", 0)
    _sub(vat, "VatFreeText", VAT_FREE_TEXT)
    free = f"Palvelusetelien tilitykset {start.month}/{start.year}"
    if credited is not None:
        free = f"Hyvittää laskun {credited.number}. " + free
    _sub(details, "InvoiceFreeText", free)
    terms = _sub(details, "PaymentTermsDetails")
    _sub(terms, "PaymentTermsFreeText", f"{invoice.payment_terms_days} päivää netto")
    _sub(terms, "InvoiceDueDate", finvoice_date(invoice.due_date), Format="CCYYMMDD")

    for line in invoice.lines:
        row = _sub(root, "InvoiceRow")
        _sub(row, "ArticleIdentifier", line["category"])
        _sub(row, "ArticleName", category_name(line["category"])[:100])
        _sub(row, "InvoicedQuantity", str(line["charge_count"]), QuantityUnitCode="kpl")
        _sub(row, "RowFreeText", f"Tilitetyt veloitukset, välityspalkkio {finvoice_amount(line['fee_cents'])} "
                                 f"EUR vähennetty palveluntuottajien tilityksistä")
        _sub(row, "RowVatRatePercent", "0")
        _sub(row, "RowVatCode", VAT_EXEMPT_CODE)
        _amount(row, "RowVatAmount", 0)
        _amount(row, "RowVatExcludedAmount", line["gross_cents"])
        _amount(row, "RowAmount", line["gross_cents"])

    epi = _sub(root, "EpiDetails")
    ident = _sub(epi, "EpiIdentificationDetails")
    _sub(ident, "EpiDate", finvoice_date(invoice.invoice_date), Format="CCYYMMDD")
    _sub(ident, "EpiReference", str(invoice.number))
    parties = _sub(epi, "EpiPartyDetails")
    _sub(_sub(parties, "EpiBfiPartyDetails"), "EpiBfiIdentifier", seller.bic or "NOTPROVIDED",
         IdentificationSchemeName="BIC")
    beneficiary = _sub(parties, "EpiBeneficiaryPartyDetails")
    _sub(beneficiary, "EpiNameAddressDetails", seller.name[:35])
    _sub(beneficiary, "EpiBei", seller.business_id)
    _sub(beneficiary, "EpiAccountID", seller.iban, IdentificationSchemeName="IBAN")
    instruction = _sub(epi, "EpiPaymentInstructionDetails")
    reference = invoice.rf_reference if reference_scheme == "ISO" else invoice.reference
    _sub(instruction, "EpiRemittanceInfoIdentifier", reference, IdentificationSchemeName=reference_scheme)
    # a credit note asks for no payment: its amount to pay is nothing
    _sub(instruction, "EpiInstructedAmount", finvoice_amount(max(total, 0)), AmountCurrencyIdentifier="EUR")
    _sub(instruction, "EpiCharge", ChargeOption="SLEV")
    _sub(instruction, "EpiDateOptionDate", finvoice_date(invoice.due_date), Format="CCYYMMDD")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
