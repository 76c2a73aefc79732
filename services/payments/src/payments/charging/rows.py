"""The rows an accepted charge writes, per table and in the tables' column order: the charge, its ledger
transaction and entries, its ``ChargeAccepted`` outbox row (the body written straight from the values,
``outbox.DirectEventRows``) and its audit row. Both stores write these rows (``store``: ``COPY`` or multi-row
inserts; ``fast_path``: one statement)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from seteli_shared import audit
from seteli_shared.auth import Principal
from seteli_shared.events import ChargeAccepted
from seteli_shared.ids import new_id
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import T as OUTBOX
from seteli_shared.outbox import DirectEventRows

from ..ledger.postings import charge_postings
from ..models import SOURCE, Charge, LedgerEntry, LedgerTransaction
from . import domain
from .engine import NewCharge
from .schemas import ChargePublic

#: the columns of a new charge, in this order (the others start NULL or at their defaults)
CHARGE_COLUMNS = ("id", "voucher_id", "funder_id", "provider_id", "category", "provider_reference", "service_date",
                  "units_x100", "unit_price_cents", "amount_cents", "own_share_cents", "tariff", "price_registered",
                  "registered_price_cents", "price_list_id", "client_fee_cents", "status", "accepted_at")
TXN_COLUMNS = ("id", "kind", "reference", "created_at")
ENTRY_COLUMNS = ("transaction_id", "account", "amount_cents")
OUTBOX_COLUMNS = ("message_id", "routing_key", "body", "created_at", "attempts", "traceparent")
AUDIT_COLUMNS = ("at", "channel", "actor", "roles", "actor_tenant", "action", "resource_type", "resource_id",
                 "funder_id", "correlation_id")
#: ``ChargeAccepted`` bodies: one writer for the process, its check against the ordinary envelope made once
_EVENTS = DirectEventRows(ChargeAccepted, SOURCE)


def charge_row(c: NewCharge) -> tuple:
    a, req = c.amounts, c.req
    return (c.id, c.voucher_id, c.funder_id, req.provider_id, c.category, c.provider_reference, req.service_date,
            req.units_x100, a.unit_price_cents, a.amount_cents, a.own_share_cents, req.tariff, a.price_registered,
            a.registered_price_cents, a.price_list_id, a.client_fee_cents, domain.ACCEPTED, c.accepted_at)


def as_charge(c: NewCharge) -> Charge:
    """The accepted charge as the table's model."""
    return Charge(**dict(zip(CHARGE_COLUMNS, charge_row(c))))


_NO_UNITS = Decimal("0.00")


def public(c: NewCharge) -> ChargePublic:
    """What ``POST /charges`` answers for a new charge: the same ``ChargePublic`` as ``ChargePublic.of(as_charge(c))``
    (``tests/charging/test_answers.py``), built from the engine's values without an ORM instance, a dump of it and
    a validation of what the engine has computed and typed already (about a tenth of a charge's CPU otherwise)."""
    a, req = c.amounts, c.req
    return ChargePublic.model_construct(
        id=c.id, voucher_id=c.voucher_id, funder_id=c.funder_id, provider_id=req.provider_id, category=c.category,
        provider_reference=c.provider_reference, service_date=req.service_date, units=from_hundredths(req.units_x100),
        unit_price_cents=a.unit_price_cents, amount_cents=a.amount_cents, own_share_cents=a.own_share_cents,
        tariff=req.tariff, price_registered=a.price_registered, registered_price_cents=a.registered_price_cents,
        price_list_id=a.price_list_id, client_fee_cents=a.client_fee_cents, status=domain.ACCEPTED,
        accepted_at=c.accepted_at, settlement_id=None, fee_cents=None, net_cents=None, corrected_units=_NO_UNITS,
        corrected_amount_cents=0)


class ChargeRows:
    """The rows of a batch's accepted charges, per table: made all at once (``ChargeRows(principal, charges)``),
    or table by table as a store streams them (``charge``, ``ledger``, ``entries``, ``event``, ``audit_row``:
    ``store.SessionChargeStore.add_stream``), the same rows either way."""

    def __init__(self, principal: Principal, charges: list[NewCharge]):
        self.principal = principal
        self.charges: list[tuple] = []
        self.txns: list[tuple] = []
        self.entries: list[tuple] = []
        self.outbox: list[tuple] = []
        self.audit: list[tuple] = []
        self._audit: tuple | None = None
        for c in charges:
            self._add(c)

    def _add(self, c: NewCharge) -> None:
        self.charges.append(charge_row(c))
        txn = self.ledger(c)
        self.txns.append(txn)
        self.entries += self.entries_of(txn[0], c)
        self.outbox.append(self.event(c))
        self.audit.append(self.audit_row(c))

    @staticmethod
    def ledger(c: NewCharge) -> tuple:
        """The charge's ledger transaction."""
        return (new_id(), "charge", c.id, c.accepted_at)

    @staticmethod
    def entries_of(txn_id: str, c: NewCharge) -> list[tuple]:
        return [(txn_id, account, amount) for account, amount in
                charge_postings(c.funder_id, c.req.provider_id, c.amounts.amount_cents)]

    @staticmethod
    def event(c: NewCharge) -> tuple:
        """The charge's ``ChargeAccepted`` outbox row."""
        a, req, at = c.amounts, c.req, c.accepted_at
        row = _EVENTS.row({
            "charge_id": c.id, "voucher_id": c.voucher_id, "funder_id": c.funder_id, "provider_id": req.provider_id,
            "category": c.category, "service_date": req.service_date, "units": from_hundredths(req.units_x100),
            "unit_price_cents": a.unit_price_cents, "amount_cents": a.amount_cents,
            "own_share_cents": a.own_share_cents, "accepted_at": at, "tariff": req.tariff,
            "price_registered": a.price_registered, "registered_price_cents": a.registered_price_cents,
            "price_list_id": a.price_list_id, "client_fee_cents": a.client_fee_cents})
        return (row["message_id"], row["routing_key"], row["body"], row["created_at"], 0, row["traceparent"])

    def audit_row(self, c: NewCharge) -> tuple:
        """The charge's audit row: the same actor, action and correlation for every charge of the batch."""
        if self._audit is None:
            record = audit.row(self.principal, "charge.create", "charge", c.id, c.funder_id)
            self._audit = tuple(record[k] for k in AUDIT_COLUMNS)
            return self._audit
        _at, channel, actor, roles, tenant, action, rtype, _rid, _fid, correlation = self._audit
        return (datetime.now(timezone.utc), channel, actor, roles, tenant, action, rtype, c.id, c.funder_id,
                correlation)

    def tables(self) -> list[tuple]:
        """(table, columns, rows), the ledger transactions before their entries (the entries' foreign key)."""
        return [(Charge.__table__, CHARGE_COLUMNS, self.charges),
                (LedgerTransaction.__table__, TXN_COLUMNS, self.txns),
                (LedgerEntry.__table__, ENTRY_COLUMNS, self.entries),
                (OUTBOX, OUTBOX_COLUMNS, self.outbox), (audit.T, AUDIT_COLUMNS, self.audit)]
