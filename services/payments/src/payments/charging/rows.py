"""The rows an accepted charge writes, per table and in the tables' column order: the charge, its ledger
transaction and entries, its ``ChargeAccepted`` outbox row (the body written straight from the values,
``outbox.DirectEventRows``) and its audit row. Both stores write these rows (``store``: ``COPY`` or multi-row
inserts; ``fast_path``: one statement)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache

from seteli_shared import audit
from seteli_shared.auth import Principal
from seteli_shared.events import AcceptedCharge, ChargeAccepted, ChargesAccepted, Envelope
from seteli_shared.ids import new_id
from seteli_shared.money import from_hundredths
from seteli_shared.logging import get_logger
from seteli_shared.outbox import T as OUTBOX
from seteli_shared.outbox import DirectEventRows, event_row
from seteli_shared.tracing import current_traceparent

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
log = get_logger(__name__)


@dataclass(frozen=True)
class AcceptedEvents:
    """What a batch announces of the charges it accepts (payments' ``ACCEPTED_EVENTS`` and
    ``ACCEPTED_EVENT_CHARGES``): ``v1`` one ``ChargeAccepted`` per charge; ``v2`` one ``ChargesAccepted`` per
    (funder, provider) of the batch, in chunks of at most ``per_event`` charges in the order they were accepted;
    ``both`` each (while consumers move over)."""

    events: str = "v2"
    per_event: int = 1000

    def __post_init__(self) -> None:
        if self.events not in ("v1", "v2", "both"):
            raise ValueError(f"accepted events {self.events!r}: v1, v2 or both")
        if not 1 <= self.per_event <= 5000:
            raise ValueError(f"charges per accepted event {self.per_event}: 1 to 5,000")

    @property
    def v1(self) -> bool:
        return self.events in ("v1", "both")

    @property
    def v2(self) -> bool:
        return self.events in ("v2", "both")

    @classmethod
    def of(cls, settings) -> "AcceptedEvents":  # noqa: ANN001  (PaymentsSettings)
        return cls(settings.accepted_events, settings.accepted_event_charges)


#: a single charge (``POST /charges``): its own ``ChargeAccepted``, as before version 2
SINGLE = AcceptedEvents("v1")
#: a bulk's default (as the settings' defaults)
BULK = AcceptedEvents()


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


class _PublicJson:
    """What ``POST /charges`` answers for a new charge as JSON values (``public(c).model_dump(mode="json")``), written
    straight from the engine's values: no model made, dumped and walked per charge. The process's first answer is
    also made the ordinary way and the two compared: if they differ, every answer is made the ordinary way
    (``tests/charging/test_answers.py`` holds them equal for any values)."""

    def __init__(self) -> None:
        self.direct: bool | None = None  # None: not compared yet

    def __call__(self, c: NewCharge) -> dict:
        if self.direct is not True:
            ordinary = public(c).model_dump(mode="json")
            if self.direct is None:
                self.direct = public_values(c) == ordinary
                if not self.direct:
                    log.warning("charges.direct_answer_differs")
            return ordinary
        return public_values(c)


def _instant(at: datetime) -> str | None:
    """``at`` as pydantic writes a UTC (or naive) datetime in JSON; None for another offset."""
    offset = at.utcoffset()
    if offset is None:
        return at.isoformat()
    return at.isoformat()[:-6] + "Z" if not offset else None


def public_values(c: NewCharge) -> dict:
    """``public(c)`` as JSON values, from the engine's values (``public_json`` checks it once against the model)."""
    a, req = c.amounts, c.req
    at = _instant(c.accepted_at)
    if at is None:
        return public(c).model_dump(mode="json")
    return {"id": c.id, "voucher_id": c.voucher_id, "funder_id": c.funder_id, "provider_id": req.provider_id,
            "category": c.category, "provider_reference": c.provider_reference,
            "service_date": req.service_date.isoformat(), "units": str(_units(req.units_x100)),
            "unit_price_cents": a.unit_price_cents, "amount_cents": a.amount_cents,
            "own_share_cents": a.own_share_cents, "tariff": req.tariff, "price_registered": a.price_registered,
            "registered_price_cents": a.registered_price_cents, "price_list_id": a.price_list_id,
            "client_fee_cents": a.client_fee_cents, "status": domain.ACCEPTED, "accepted_at": at,
            "settlement_id": None, "fee_cents": None, "net_cents": None, "corrected_units": "0.00",
            "corrected_amount_cents": 0}


public_json = _PublicJson()


class ChargeRows:
    """The rows of a batch's accepted charges, per table: made all at once (``ChargeRows(principal, charges)``),
    or table by table as a store streams them (``charge``, ``ledger``, ``entries``, ``event``, ``audit_row``:
    ``store.SessionChargeStore.add_stream``), the same rows either way."""

    def __init__(self, principal: Principal, charges: list[NewCharge], events: AcceptedEvents = SINGLE):
        self.principal, self.announce = principal, events
        self.charges: list[tuple] = []
        self.txns: list[tuple] = []
        self.entries: list[tuple] = []
        self.outbox: list[tuple] = []
        self.audit: list[tuple] = []
        self._audit: tuple | None = None
        for c in charges:
            self._add(c)
        if events.v2:
            self.outbox += v2_rows(charges, events.per_event)

    def _add(self, c: NewCharge) -> None:
        self.charges.append(charge_row(c))
        txn = self.ledger(c)
        self.txns.append(txn)
        self.entries += self.entries_of(txn[0], c)
        if self.announce.v1:
            self.outbox.append(self.event(c))
        self.audit.append(self.audit_row(c))

    @staticmethod
    def ledger(c: NewCharge) -> tuple:
        """The charge's ledger transaction."""
        return (new_id(), "charge", c.id, c.accepted_at)

    @staticmethod
    def entries_of(txn_id: str, c: NewCharge) -> list[tuple]:
        return [(txn_id, account, amount) for account, amount in
                _postings(c.funder_id, c.req.provider_id, c.amounts.amount_cents)]

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


# ------------------------------------------------------------------ charge.accepted.v2
@lru_cache(maxsize=4096)
def _postings(funder_id: str, provider_id: str, amount_cents: int) -> tuple[tuple[str, int], ...]:
    """``charge_postings``, worked out once per funder, provider and amount (a bulk's charges repeat them)."""
    return tuple(charge_postings(funder_id, provider_id, amount_cents))


#: units as a ``ChargesAccepted`` lists them (``from_hundredths``), worked out once per distinct value (a bulk's
#: lines repeat a few; a ``Decimal`` is immutable, so one object serves them all)
_units = lru_cache(maxsize=4096)(from_hundredths)


def accepted_part(c: NewCharge) -> dict:
    """The charge as a ``ChargesAccepted`` lists it: the values its ``ChargeAccepted`` has beyond its funder and
    provider (the same values ``event`` writes), in the model's field order."""
    a, req = c.amounts, c.req
    return {"charge_id": c.id, "voucher_id": c.voucher_id, "category": c.category, "service_date": req.service_date,
            "units": _units(req.units_x100), "unit_price_cents": a.unit_price_cents,
            "amount_cents": a.amount_cents, "own_share_cents": a.own_share_cents, "accepted_at": c.accepted_at,
            "tariff": req.tariff, "price_registered": a.price_registered,
            "registered_price_cents": a.registered_price_cents, "price_list_id": a.price_list_id,
            "client_fee_cents": a.client_fee_cents}


class _V2Bodies:
    """``ChargesAccepted`` outbox rows, each body the one ``Envelope.wrap`` makes: the envelope of the event with
    its first charge (validated), its ``charges`` then the whole chunk's plain values (no model per charge made and
    dumped). The process's first event is also made the ordinary way and the two bodies compared: if they differ,
    every event is made the ordinary way."""

    def __init__(self) -> None:
        self.direct: bool | None = None  # None: not compared yet

    def row(self, funder_id: str, provider_id: str, parts: list[dict]) -> tuple:
        if self.direct is not True:
            event = ChargesAccepted(funder_id=funder_id, provider_id=provider_id,
                                    charges=[AcceptedCharge.model_construct(**p) for p in parts])
            env, row = event_row(event, SOURCE)
            if self.direct is None:
                self.direct = _with_charges(env, parts) == row["body"]
                if not self.direct:
                    log.warning("outbox.direct_body_differs", event_type=ChargesAccepted.event_type())
            return (row["message_id"], row["routing_key"], row["body"], row["created_at"], 0, row["traceparent"])
        env = Envelope.wrap(ChargesAccepted(funder_id=funder_id, provider_id=provider_id,
                                            charges=[AcceptedCharge(**parts[0])]), SOURCE)
        return (env.id, env.routing_key, _with_charges(env, parts), env.time, 0, current_traceparent())


def _with_charges(env: Envelope, charges: list[dict]) -> str:
    """The JSON of ``env`` with its data's ``charges`` replaced by ``charges``."""
    return env.model_copy(update={"data": {**env.data, "charges": charges}}).model_dump_json()


_V2 = _V2Bodies()


def v2_rows(charges: list[NewCharge], per_event: int) -> list[tuple]:
    """The ``ChargesAccepted`` outbox rows of a batch's accepted charges: one per (funder, provider), in chunks of
    at most ``per_event`` charges, each chunk's charges in the order they were accepted."""
    made = V2Rows(per_event)
    for c in charges:
        made.add(c)
    return made.rows()


class V2Rows:
    """``v2_rows`` made as the charges come (``add``, one at a time in the order they were accepted): an event's
    body is written as soon as its ``per_event`` charges are there (a store streaming the batch's other rows to
    the database meanwhile), the last ones' at ``rows``."""

    def __init__(self, per_event: int) -> None:
        self.per_event = per_event
        self.parts: dict[tuple[str, str], list[dict]] = {}
        self.made: dict[tuple[str, str], list[tuple]] = {}

    def add(self, c: NewCharge) -> None:
        key = (c.funder_id, c.req.provider_id)
        parts = self.parts.get(key)
        if parts is None:
            parts = self.parts[key] = []
            self.made[key] = []
        parts.append(accepted_part(c))
        if len(parts) == self.per_event:
            self.made[key].append(_V2.row(key[0], key[1], parts))
            self.parts[key] = []

    def rows(self) -> list[tuple]:
        out = []
        for key, made in self.made.items():
            out += made
            if self.parts[key]:
                out.append(_V2.row(key[0], key[1], self.parts[key]))
        return out
