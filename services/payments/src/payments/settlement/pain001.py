"""ISO 20022 pain.001.001.03 (customer credit transfer initiation), SEPA, EUR: one payment information
block from the operator's account, one credit transfer per settlement to the provider's IBAN with a
structured creditor reference (RF, ISO 11649). Amounts from integer cents; control sums are exact."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from xml.etree import ElementTree as ET

from seteli_shared.money import euros

NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"


@dataclass(frozen=True)
class Debtor:
    name: str
    iban: str
    bic: str | None = None


@dataclass(frozen=True)
class CreditTransfer:
    end_to_end_id: str
    amount_cents: int
    creditor_name: str | None
    creditor_iban: str | None
    creditor_bic: str | None
    reference: str


class MissingAccount(ValueError):
    """A payee's IBAN is not known (payments has not heard it from the registry)."""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def build(message_id: str, created_at: datetime, execution_date: date, debtor: Debtor,
          payments: list[CreditTransfer]) -> bytes:
    """The XML document (UTF-8). Raises ``MissingAccount`` when a payee has no IBAN."""
    missing = [p.end_to_end_id for p in payments if not p.creditor_iban]
    if missing:
        raise MissingAccount(", ".join(missing))
    total = euros(sum(p.amount_cents for p in payments))
    ET.register_namespace("", NS)
    doc = ET.Element(f"{{{NS}}}Document")
    root = _sub(doc, f"{{{NS}}}CstmrCdtTrfInitn")
    q = lambda tag: f"{{{NS}}}{tag}"  # noqa: E731
    hdr = _sub(root, q("GrpHdr"))
    _sub(hdr, q("MsgId"), message_id)
    _sub(hdr, q("CreDtTm"), created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(hdr, q("NbOfTxs"), str(len(payments)))
    _sub(hdr, q("CtrlSum"), total)
    _sub(_sub(hdr, q("InitgPty")), q("Nm"), debtor.name[:70])
    inf = _sub(root, q("PmtInf"))
    _sub(inf, q("PmtInfId"), message_id)
    _sub(inf, q("PmtMtd"), "TRF")
    _sub(inf, q("BtchBookg"), "true")
    _sub(inf, q("NbOfTxs"), str(len(payments)))
    _sub(inf, q("CtrlSum"), total)
    _sub(_sub(_sub(inf, q("PmtTpInf")), q("SvcLvl")), q("Cd"), "SEPA")
    _sub(inf, q("ReqdExctnDt"), execution_date.isoformat())
    _sub(_sub(inf, q("Dbtr")), q("Nm"), debtor.name[:70])
    _sub(_sub(_sub(inf, q("DbtrAcct")), q("Id")), q("IBAN"), debtor.iban)
    agent = _sub(_sub(inf, q("DbtrAgt")), q("FinInstnId"))
    if debtor.bic:
        _sub(agent, q("BIC"), debtor.bic)
    else:
        _sub(_sub(agent, q("Othr")), q("Id"), "NOTPROVIDED")
    _sub(inf, q("ChrgBr"), "SLEV")
    for p in payments:
        tx = _sub(inf, q("CdtTrfTxInf"))
        ids = _sub(tx, q("PmtId"))
        _sub(ids, q("InstrId"), p.end_to_end_id)
        _sub(ids, q("EndToEndId"), p.end_to_end_id)
        _sub(_sub(tx, q("Amt")), q("InstdAmt"), euros(p.amount_cents), Ccy="EUR")
        if p.creditor_bic:
            _sub(_sub(_sub(tx, q("CdtrAgt")), q("FinInstnId")), q("BIC"), p.creditor_bic)
        _sub(_sub(tx, q("Cdtr")), q("Nm"), (p.creditor_name or "Provider")[:70])
        _sub(_sub(_sub(tx, q("CdtrAcct")), q("Id")), q("IBAN"), p.creditor_iban)
        ref = _sub(_sub(_sub(tx, q("RmtInf")), q("Strd")), q("CdtrRefInf"))
        tp = _sub(ref, q("Tp"))
        _sub(_sub(tp, q("CdOrPrtry")), q("Cd"), "SCOR")
        _sub(tp, q("Issr"), "ISO")
        _sub(ref, q("Ref"), p.reference)
    return ET.tostring(doc, encoding="utf-8", xml_declaration=True)
