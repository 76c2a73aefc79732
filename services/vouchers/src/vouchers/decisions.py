"""Service decisions from funders' case systems on the bus (``seteli_shared.decisions`` is the contract).

The vouchers service consumes ``<ns>.decisions`` on a queue of its own, ``<ns>.vouchers.decisions``
(bound to ``decision.*``, with its own dead-letter queue), and answers every decision on
``<ns>.decision-replies`` with routing key ``reply.<funder_id>`` through the outbox, in the same
transaction as the voucher's change:

- the funder is the one the broker vouched for (``trusted_funder(user_id)``); it must be the decision's
  ``funder_id`` and the routing key's, else ``funder_mismatch``; a funder the registry has not announced:
  ``unknown_funder``;
- a grant issues the voucher through the same use case as ``POST /vouchers`` (``usecases.issue_in``);
- idempotent by (funder, ``decision_ref``, ``decision_version``): the same version again changes nothing
  and is answered again (``outcome`` ``repeated``, without the login code: it is shown once); a higher
  version amends the voucher (``VoucherAmended``) or revokes it (``VoucherRevoked``); a lower one is
  answered ``stale_version``;
- a message that breaks the contract, or carries a personal identity code anywhere, is dead-lettered
  by the consumer (the latter without its body) and answered ``DecisionRejected``
  (``on_decision_refused``): the answer is the only thing stored of it.

A decision whose envelope carries ``replymode`` ``batched`` (``DecisionEnvelope``) is answered inside one
``DecisionReplies`` per funder and run of the consumer (``replies.py``), the same reply envelopes listed.

A message whose publisher is no funder's case system the platform knows (its broker user is not
``<BROKER_USER_PREFIX>funder-<funder_id>``) is answered ``unknown_publisher`` on the reply queue of the funder
its routing key names, when that queue exists; otherwise it is dead-lettered with the reason.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from pydantic_core import PydanticUndefined, to_json
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from seteli_shared import audit
from seteli_shared.audit import T as AUDIT
from seteli_shared.audit import row as audit_row
from seteli_shared.catalogue import CATEGORIES
from seteli_shared.codes import new_code
from seteli_shared.ids import new_id
from seteli_shared.auth import Principal, Role
from seteli_shared.broker import trusted_funder
from seteli_shared.clock import SYSTEM_CLOCK, Clock
from seteli_shared.consumer import PRIVACY_REASON, Refused, current_consumer, current_delivery, current_run
from seteli_shared.errors import PermanentMessageError
from seteli_shared.decisions import (DECISION_BINDING, DECISION_TYPE, DECISIONS_EXCHANGE, REPLIES_EXCHANGE,
                                     BATCHED, DecisionAccepted, DecisionData, DecisionEnvelope, DecisionRejected,
                                     DecisionReply,
                                     funder_of_routing_key, reply_queue, reply_routing_key, safe_location)
from seteli_shared.errors import Conflict, DomainError
from seteli_shared.events import (Envelope, IssuedVoucher, VoucherAmended, VoucherIssued, VoucherRevoked,
                                  VouchersIssued, utcnow)
from seteli_shared.logging import bind_correlation, causation_id_var, correlation_id_var, get_logger
from seteli_shared.tracing import current_traceparent
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import (EXCHANGE_SEPARATOR, T as OUTBOX, DirectEventRows, add_event, add_message,
                                   event_row, message_row, wake_relay_on_commit)
from seteli_shared.privacy import find_in
from seteli_shared.rows import RowsInsert, _element_type
from seteli_shared.service import ConsumerSpec

from . import domain, formulas, kinds, replies, usecases
from .models import Funder, Voucher
from .schemas import VoucherCreate, shown_code

SOURCE = "vouchers"
REVOKED = "revoked"
log = get_logger(__name__)
#: the clock decisions from the bus are judged by (tests may replace it)
clock: Clock = SYSTEM_CLOCK


# ------------------------------------------------------------------ replies
async def send_reply(session: AsyncSession, reply: DecisionReply, causation_id: str | None) -> Envelope:
    """Record the reply in the outbox, in the caller's transaction: ``reply.<funder_id>`` on
    ``<ns>.decision-replies``; for a decision whose case system asked for batched replies, listed in the run's
    ``DecisionReplies`` instead (``replies.current_batch``), the same envelope."""
    envelope = reply.envelope(SOURCE, causation_id)
    batch = replies.current_batch.get()
    if batch is not None:
        batch.add(reply.funder_id, envelope.model_dump_json())
        return envelope
    return await add_message(session, envelope, REPLIES_EXCHANGE, reply_routing_key(reply.funder_id))


def _user_prefix() -> str:
    """``BROKER_USER_PREFIX``: the same setting ``seteli-broker`` names the case systems' users with."""
    consumer = current_consumer.get()
    return consumer.bus.settings.broker_user_prefix if consumer else ""


def _publisher(message: AbstractIncomingMessage | None) -> str | None:
    """The funder whose case system published the message, as the broker vouches for it."""
    return trusted_funder(message.user_id if message else None, _user_prefix())


async def _reply_queue_exists(funder_id: str | None) -> bool:
    """Whether ``funder_id``'s reply queue exists on the broker (a passive declare, which needs no permission;
    the broker closes the channel when it does not)."""
    consumer = current_consumer.get()
    if not funder_id or consumer is None:
        return False
    channel = await consumer.bus.connection.channel()
    try:
        await channel.declare_queue(reply_queue(consumer.bus.settings.bus_namespace, funder_id), passive=True)
    except Exception:  # noqa: BLE001  (not found: the broker closed the channel)
        return False
    await channel.close()
    return True


async def _answerable(message: AbstractIncomingMessage | None) -> tuple[str | None, bool]:
    """Whom to answer and whether the broker vouches for it: the publishing case system's funder when the
    broker user is one; else the funder the routing key names, when its reply queue exists (a user that
    ``seteli-broker`` made under another ``BROKER_USER_PREFIX``, or an administrator's publish: the funder
    learns why its decisions come to nothing); else nobody (the message is dead-lettered with the reason)."""
    publisher = _publisher(message)
    if publisher is not None:
        return publisher, True
    routed_to = funder_of_routing_key(message.routing_key if message else None)
    return (routed_to, False) if await _reply_queue_exists(routed_to) else (None, False)


def _unknown_publisher_text(message: AbstractIncomingMessage | None) -> str:
    user = (message.user_id if message else None) or "(none)"
    return (f"the broker user {user} is no funder's case system here: the platform knows them as "
            f"{_user_prefix()}funder-<funder_id> (BROKER_USER_PREFIX {_user_prefix()!r})")


# ------------------------------------------------------------------ the rules of versions
def _voucher_create(data: DecisionData) -> VoucherCreate:
    """The decision's terms as the HTTP API's request (the same field rules: known category, references)."""
    try:
        return VoucherCreate.model_validate({
            "funder_id": data.funder_id, "decision_ref": data.decision_ref, "client_ref": data.client_ref,
            "category": data.category, "units_per_period": data.units_per_period, "period": data.period,
            "value_per_unit_cents": data.value_per_unit_cents, "valid_from": data.valid_from,
            "valid_until": data.valid_until, "carry_over": data.carry_over,
            "age_band": data.age_band, "municipality_of_residence": data.municipality_of_residence,
            **{f: getattr(data, f) for f in _KIND_FIELDS if getattr(data, f) is not None}})
    except ValidationError as exc:
        fields = [loc for e in exc.errors() if (loc := safe_location(("data", *e["loc"])))]
        kinds = sorted({str(e.get("type")) for e in exc.errors()})
        raise DomainError("contract_violation", f"the decision's terms are refused: {', '.join(kinds)}",
                          fields=fields) from None


#: the decision's kind fields, passed on to the request when given (kinds.py)
_KIND_FIELDS = ("kind", "value_table_version", "household_size", "gross_monthly_income_cents",
                "max_value_per_unit_cents", "client_fee_cents", "budget_cents", "categories")


def _same_grant(v: Voucher, data: DecisionData, terms: kinds.KindTerms) -> bool:
    return v.status != REVOKED and (v.client_ref, v.category, v.period, v.valid_from, v.valid_until) == (
        data.client_ref, data.category, data.period.value, data.valid_from, data.valid_until
    ) and kinds.same_terms(v, terms) and v.carry_over == data.carry_over


def _same_revocation(v: Voucher, data: DecisionData) -> bool:
    return v.status == REVOKED and v.client_ref == data.client_ref and (
        data.effective_from is None or data.effective_from == v.revoked_from)


def check_amended_validity(valid_from: date, valid_until: date) -> None:
    """An amendment may move the validity anywhere a voucher may last (``invalid_validity``)."""
    if valid_until < valid_from:
        raise DomainError("invalid_validity", "valid_until is before valid_from")
    if valid_until > domain._years_after(valid_from, domain.MAX_VALIDITY_YEARS):
        raise DomainError("invalid_validity", f"a voucher is valid for at most {domain.MAX_VALIDITY_YEARS} years")


def _accepted(v: Voucher, outcome: str, login_code: str | None = None) -> DecisionAccepted:
    return DecisionAccepted(funder_id=v.funder_id, decision_ref=v.decision_ref, decision_version=v.decision_version,
                            voucher_id=v.id, voucher_code=shown_code(v.voucher_code),
                            client_login_code=shown_code(login_code),
                            status=v.status, outcome=outcome)


async def apply_decision(session: AsyncSession, principal: Principal, data: DecisionData,
                         now_clock: Clock) -> DecisionAccepted:
    """Apply one decision of ``principal``'s funder in the caller's transaction; a refusal raises a
    ``DomainError`` before anything is written."""
    domain.check_funder_known(await session.get(Funder, data.funder_id) is not None)
    voucher = (await session.exec(select(Voucher).where(
        Voucher.funder_id == data.funder_id, Voucher.decision_ref == data.decision_ref).with_for_update())).first()
    if voucher is None:
        if data.action == "revoke":
            raise DomainError("unknown_decision", "no voucher has been issued on this decision reference")
        body = _voucher_create(data)
        voucher, login_code = await usecases.issue_in(session, principal, body, now_clock, channel="bus",
                                                      decision_version=data.decision_version)
        log.info("decision.voucher_issued", voucher_id=voucher.id, funder_id=voucher.funder_id,
                 decision_version=data.decision_version)
        return _accepted(voucher, "issued", login_code)
    if data.decision_version < voucher.decision_version:
        raise DomainError("stale_version", f"version {voucher.decision_version} of this decision has been applied: "
                                           "an older one changes nothing", applied_version=voucher.decision_version)
    if data.decision_version == voucher.decision_version:
        if data.action == "grant":
            same = _same_grant(voucher, data, await formulas.kind_terms(session, _voucher_create(data)))
        else:
            same = _same_revocation(voucher, data)
        if not same:
            raise Conflict("decision_conflict", "this version of the decision was applied with other content")
        return _accepted(voucher, "repeated")
    # a newer version
    if voucher.status == REVOKED:
        raise DomainError("voucher_revoked", "the voucher has been revoked: a new decision needs a new reference")
    if data.client_ref != voucher.client_ref:
        raise Conflict("decision_conflict", "a later version of the decision names another client")
    now = now_clock.now()
    if data.action == "revoke":
        voucher.status, voucher.revoked_at = REVOKED, now
        voucher.revoked_from = data.effective_from or now_clock.today()
        voucher.decision_version = data.decision_version
        session.add(voucher)
        await session.flush()
        await add_event(session, VoucherRevoked(
            voucher_id=voucher.id, funder_id=voucher.funder_id, decision_ref=voucher.decision_ref,
            decision_version=voucher.decision_version, category=voucher.category,
            effective_from=voucher.revoked_from, revoked_at=now), SOURCE)
        await audit.record(session, principal, "voucher.revoke", "voucher", voucher.id, voucher.funder_id,
                           channel="bus")
        log.info("decision.voucher_revoked", voucher_id=voucher.id, decision_version=data.decision_version)
        return _accepted(voucher, "revoked")
    body = _voucher_create(data)
    if body.category != voucher.category:
        raise Conflict("decision_conflict", "a later version of the decision names another service category")
    check_amended_validity(body.valid_from, body.valid_until)
    terms = await formulas.kind_terms(session, body)
    if terms.kind != voucher.kind:
        raise Conflict("decision_conflict", "a later version of the decision names another kind of voucher")
    voucher.period = body.period.value
    for column, value in terms.columns().items():
        setattr(voucher, column, value)
    voucher.valid_from, voucher.valid_until = body.valid_from, body.valid_until
    voucher.carry_over = body.carry_over
    voucher.decision_version = data.decision_version
    session.add(voucher)
    await session.flush()
    await add_event(session, VoucherAmended(
        voucher_id=voucher.id, funder_id=voucher.funder_id, decision_ref=voucher.decision_ref,
        decision_version=voucher.decision_version, category=voucher.category,
        units_per_period=from_hundredths(voucher.units_per_period_x100), period=voucher.period,
        value_per_unit_cents=voucher.value_per_unit_cents, valid_from=voucher.valid_from,
        valid_until=voucher.valid_until, amended_at=now, carry_over=voucher.carry_over), SOURCE)
    await audit.record(session, principal, "voucher.amend", "voucher", voucher.id, voucher.funder_id, channel="bus")
    log.info("decision.voucher_amended", voucher_id=voucher.id, decision_version=data.decision_version)
    return _accepted(voucher, "amended")


# ------------------------------------------------------------------ the consumer's handlers
async def on_decision(session: AsyncSession, envelope: Envelope, data: DecisionData) -> None:
    """A decision that keeps the contract, in the consumer's transaction (its inbox claim included)."""
    message = current_delivery.get()
    publisher, vouched = await _answerable(message)
    causation = envelope.id

    async def reject(reason: str, text: str, fields: list[str] | None = None) -> None:
        log.info("decision.rejected", reason=reason, publisher_funder=publisher, decision_version=data.decision_version)
        await send_reply(session, DecisionRejected(
            funder_id=publisher, decision_ref=data.decision_ref, decision_version=data.decision_version,
            reason=reason, message=text, fields=fields or []), causation)
        roles = frozenset({Role.FUNDER_CASE_SYSTEM}) if vouched else frozenset()
        principal = Principal(subject=message.user_id or "unknown", roles=roles, funder_id=publisher)
        await audit.record(session, principal, f"decision.reject.{reason}", "decision", None, publisher,
                           channel="bus")

    if not vouched:
        if publisher is None:  # nobody to answer: the dead-letter queue keeps it with the reason
            raise PermanentMessageError(f"unknown_publisher: {_unknown_publisher_text(message)}; no reply queue "
                                        "exists for the funder of its routing key")
        await reject("unknown_publisher", _unknown_publisher_text(message))
        return
    routed_to = funder_of_routing_key(message.routing_key if message else None)
    if publisher != data.funder_id or publisher != routed_to:
        await reject("funder_mismatch", "a case system may send only its own funder's decisions, with its own "
                                        "routing key decision.<funder_id>")
        return
    principal = Principal(subject=message.user_id, roles=frozenset({Role.FUNDER_CASE_SYSTEM}), funder_id=publisher)
    try:
        accepted = await apply_decision(session, principal, data, clock)
    except DomainError as exc:
        await reject(exc.reason, exc.message, exc.details.get("fields"))
        return
    await send_reply(session, accepted, causation)


def _clean_reference(value: object) -> str | None:
    try:
        return domain.valid_reference(value) if isinstance(value, str) else None
    except Exception:  # noqa: BLE001  (not a reference: not repeated)
        return None


async def on_decision_refused(session: AsyncSession, message: AbstractIncomingMessage, refused: Refused) -> None:
    """A message on the decisions queue that can never be processed (it is dead-lettered next): answer
    its publisher ``DecisionRejected``, naming the decision only by a reference that passes the contract
    and never repeating any other value of it."""
    publisher, vouched = await _answerable(message)
    if publisher is None:  # dead-lettered next, with the reason
        log.warning("decision.refused_unanswerable", reason=refused.reason.split(":")[0])
        return
    raw = refused.raw if isinstance(refused.raw, dict) else {}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    version = data.get("decision_version")
    version = version if type(version) is int and version >= 1 else None
    env_id = raw.get("id")
    causation = env_id if isinstance(env_id, str) and len(env_id) <= 64 and not find_in(env_id) else None
    if refused.reason == PRIVACY_REASON:
        reason, text, fields = PRIVACY_REASON, ("the decision carried a personal identity code: clients are known "
                                                "only by pseudonymous references; nothing of it was kept"), []
    elif refused.reason == "unknown_type":
        reason, text, fields = "unknown_type", f"a decision's type is {DECISION_TYPE}", ["type"]
    else:
        reason, fields, kinds = "contract_violation", [], []
        if refused.error is not None:
            prefix = ("data",) if refused.reason.startswith("contract_violation") else ()
            for e in refused.error.errors():
                kinds.append(str(e.get("type")))
                if loc := safe_location((*prefix, *e["loc"])):
                    fields.append(loc)
        elif refused.reason.startswith("contract_violation: nul_character"):
            kinds.append("nul_character")
        else:
            kinds.append(refused.reason.split(":")[0])
        text = "the decision breaks the contract: " + ", ".join(sorted(set(kinds)) or ["invalid"])
    if not vouched:
        text += f"; besides, {_unknown_publisher_text(message)}"
    await send_reply(session, DecisionRejected(
        funder_id=publisher, decision_ref=_clean_reference(data.get("decision_ref")), decision_version=version,
        reason=reason, message=text, fields=list(dict.fromkeys(fields))), causation)
    log.info("decision.refused", reason=reason, publisher_funder=publisher)


# ------------------------------------------------------------------ a run of decisions at once
_VOUCHER_COLUMNS = [c.name for c in Voucher.__table__.columns]
#: the model's defaults of the columns a new voucher does not set (``provider_id``, ``revoked_at``...)
_VOUCHER_DEFAULTS = {name: field.default for name, field in Voucher.model_fields.items()
                     if name in _VOUCHER_COLUMNS and field.default is not PydanticUndefined}


_JSON_COLUMNS = [c.name for c in Voucher.__table__.columns if isinstance(c.type, sa.JSON)]


class _VoucherRows(RowsInsert):
    """``RowsInsert`` of new vouchers. PostgreSQL's arrays cannot carry a JSON column's values as such (a list
    would be taken for a dimension of the array): they go as the JSON text the column's type writes (``None``
    as ``null``, as an insert of the row writes it) and are cast back by the statement."""

    def statement(self, dialect: str) -> Any:
        found = self._statements.get(dialect)
        if found is None and dialect == "postgresql":
            table = self.table
            arrays = [sa.bindparam(c, type_=postgresql.ARRAY(sa.Text() if c in _JSON_COLUMNS
                                                              else _element_type(table.c[c]))) for c in self.columns]
            rows = sa.func.unnest(*arrays).table_valued(*self.columns).render_derived(name="rows")
            found = postgresql.insert(table).from_select(self.columns, sa.select(*[
                sa.cast(rows.c[c], table.c[c].type) if c in _JSON_COLUMNS else rows.c[c] for c in self.columns]))
            self._statements[dialect] = found
        return found if found is not None else super().statement(dialect)

    async def execute(self, session: AsyncSession, rows: list[dict[str, Any]]) -> sa.Result | None:
        if rows and session.bind.dialect.name == "postgresql":
            rows = [{**r, **{c: json.dumps(r[c]) for c in _JSON_COLUMNS}} for r in rows]
        return await super().execute(session, rows)


#: each kind of row a run adds, inserted in one statement whatever the run's size (on PostgreSQL one array per
#: column, unnested by the statement: prepared once per connection, one execution for the run)
_VOUCHER_ROWS = _VoucherRows(Voucher.__table__, _VOUCHER_COLUMNS)
_OUTBOX_ROWS = RowsInsert(OUTBOX, ["message_id", "routing_key", "body", "created_at", "attempts", "traceparent"])
_AUDIT_ROWS = RowsInsert(AUDIT, ["at", "channel", "actor", "roles", "actor_tenant", "action", "resource_type",
                                 "resource_id", "funder_id", "correlation_id"])
#: ``VoucherIssued`` rows written from the values (``outbox.DirectEventRows``: the first compared with the model's)
_ISSUED = DirectEventRows(VoucherIssued, SOURCE)


class _Rows:
    """The rows a run's new grants add, in the order one at a time would have added them: vouchers, outbox
    rows (each voucher's issued event before its reply) and audit rows; each kind one statement (``RowsInsert``).
    With ``ISSUED_EVENTS`` ``v2`` (or ``both``) the vouchers gathered since the last write are announced per funder
    as ``VouchersIssued`` (``_ISSUED_MANY``), written before the replies gathered with them; a funder's single
    voucher as its ``VoucherIssued``, with its decision's correlation (``v2``)."""

    def __init__(self, events: str = "v2", per_event: int = 1000) -> None:
        self.events, self.per_event = events, per_event
        self.vouchers: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        #: funder -> each new voucher's ``VoucherIssued`` values, correlation and causation ids (``v2``, ``both``)
        self.many: dict[str, list[tuple[dict[str, Any], str | None, str | None]]] = {}
        #: (voucher id, funder id, correlation id) of each voucher issued: logged in one line per write (a log line
        #: per voucher was a sixth of a decision's CPU)
        self.issued: list[tuple[str, str, str | None]] = []

    def add_issued(self, values: dict[str, Any]) -> None:
        """A new voucher's ``VoucherIssued`` (its field values), as ``ISSUED_EVENTS`` says."""
        if self.events != "v2":
            self.outbox.append(_ISSUED.row(values))
        if self.events != "v1":
            self.many.setdefault(values["funder_id"], []).append(
                (values, correlation_id_var.get(), causation_id_var.get()))

    def _issued_first(self) -> list[dict[str, Any]]:
        """The outbox rows announcing the vouchers gathered per funder (``VouchersIssued``), first in the write."""
        out: list[dict[str, Any]] = []
        for funder_id, issued in self.many.items():
            if len(issued) == 1 and self.events == "v2":
                values, correlation, causation = issued[0]
                with _caused(correlation, causation):
                    out.append(_ISSUED.row(values))
                continue
            for i in range(0, len(issued), self.per_event):
                part = issued[i:i + self.per_event]
                with _caused(part[0][1], part[0][2]):
                    out.append(_issued_many_row(funder_id, [v for v, _c, _k in part]))
        self.many = {}
        return out

    async def write(self, session: AsyncSession) -> None:
        await _VOUCHER_ROWS.execute(session, self.vouchers)
        if self.many:
            self.outbox[:0] = self._issued_first()
        if self.outbox:
            await _OUTBOX_ROWS.execute(session, self.outbox)
            wake_relay_on_commit(session)
        await _AUDIT_ROWS.execute(session, self.audit)
        if self.issued:
            # one text, ``voucher_id:funder_id:correlation_id`` a voucher joined by commas: the logger's guard reads it
            # in one pass (neither character can be part of a personal identity code, so it finds in the whole
            # exactly what it would find in the parts); a list of objects cost a walk and a check a value
            log.info("decision.vouchers_issued", count=len(self.issued),
                     vouchers=",".join(f"{v}:{f}:{c or ''}" for v, f, c in self.issued))
        self.vouchers, self.outbox, self.audit, self.issued = [], [], [], []


@contextmanager
def _caused(correlation: str | None, causation: str | None) -> Iterator[None]:
    """The correlation and causation ids events made here carry (a decision's, while a run's rows are written)."""
    tokens = correlation_id_var.set(correlation), causation_id_var.set(causation)
    try:
        yield
    finally:
        correlation_id_var.reset(tokens[0])
        causation_id_var.reset(tokens[1])


_ISSUED_MANY = DirectEventRows(VouchersIssued, SOURCE)
_ITEM_DEFAULTS = {name: field.default for name, field in IssuedVoucher.model_fields.items()}
_ITEM_REQUIRED = {name for name, field in IssuedVoucher.model_fields.items() if field.is_required()}


def _issued_many_row(funder_id: str, issued: list[dict[str, Any]]) -> dict[str, Any]:
    """The outbox row of a ``VouchersIssued`` listing these vouchers (their ``VoucherIssued`` values), its body
    written straight from the values by ``DirectEventRows`` (each item in the model's field order, its defaults
    filled in); a voucher whose values the model might take otherwise sends the event through the model."""
    items = [{**_ITEM_DEFAULTS, **{k: v for k, v in values.items() if k != "funder_id"}} for values in issued]
    if all(_ITEM_REQUIRED <= values.keys() <= _ITEM_DEFAULTS.keys() | {"funder_id"} for values in issued):
        return _ISSUED_MANY.row({"funder_id": funder_id, "vouchers": items})
    return event_row(VouchersIssued(funder_id=funder_id, vouchers=items), SOURCE)[1]


def _reply_row(reply: DecisionReply, causation_id: str | None) -> dict[str, Any]:
    return message_row(reply.envelope(SOURCE, causation_id), REPLIES_EXCHANGE, reply_routing_key(reply.funder_id))


def _answer(rows: "_Rows", funder_id: str, row: dict[str, Any]) -> None:
    """A run's reply: its outbox row, or the row's body listed in the run's ``DecisionReplies`` when its case system
    asked for batched replies (``replies.current_batch``)."""
    batch = replies.current_batch.get()
    if batch is None:
        rows.outbox.append(row)
    else:
        batch.add(funder_id, row["body"])


class _AcceptedRows:
    """Outbox rows of ``DecisionAccepted`` replies to new grants, each body the JSON ``_reply_row`` makes, written
    by pydantic-core straight from the values (as ``outbox.DirectEventRows`` writes events): the first one is
    made the ordinary way too and the bodies compared; if they differ, every reply is made the ordinary way."""

    def __init__(self) -> None:
        self.direct: bool | None = None  # None: not compared yet
        self.type = DecisionAccepted.reply_type()
        self.where = f"/seteli/{SOURCE}"

    def row(self, values: dict[str, Any], causation_id: str | None) -> dict[str, Any]:
        if not self.direct:
            reply = DecisionAccepted(**values)
            row = _reply_row(reply, causation_id)
            if self.direct is None:
                body = self._body({**values, "answered_at": reply.answered_at}, row["message_id"],
                                  row["created_at"], causation_id)
                self.direct = body == row["body"]
                if not self.direct:
                    log.warning("decision.direct_reply_differs")
            return row
        eid, now = new_id(), utcnow()
        key = f"{REPLIES_EXCHANGE}{EXCHANGE_SEPARATOR}{reply_routing_key(values['funder_id'])}"  # as message_row
        return {"message_id": eid, "routing_key": key,
                "body": self._body({**values, "answered_at": now}, eid, now, causation_id), "created_at": now,
                "attempts": 0, "traceparent": current_traceparent()}

    def _body(self, values: dict[str, Any], eid: str, at: Any, causation_id: str | None) -> str:
        data = {name: values.get(name) for name in DecisionAccepted.model_fields}  # the model's order
        return to_json({"specversion": "1.0", "id": eid, "source": self.where, "type": self.type, "time": at,
                        "subject": values["decision_ref"], "datacontenttype": "application/json", "data": data,
                        "correlationid": correlation_id_var.get() or eid, "causationid": causation_id}).decode()


_ACCEPTED = _AcceptedRows()


async def _issue_row(session: AsyncSession, principal: Principal, data: DecisionData, envelope: Envelope,
                     rows: _Rows) -> None:
    """A new grant (its decision reference has no voucher, and no other decision of the run names it), as
    ``apply_decision`` and ``usecases.issue_in`` issue it, as rows: the same checks in the same order
    (``DomainError`` before anything is added), the same voucher, ``VoucherIssued``, reply and audit row."""
    body = _voucher_create(data)
    terms = await formulas.kind_terms(session, body)
    domain.check_validity(body.valid_from, body.valid_until, clock.today())
    # the row as ``Voucher(...)`` would make it, as a plain namespace: a table model's constructor (its
    # instrumented attributes) cost more than all of the rest of a decision
    voucher = SimpleNamespace(**{
        **_VOUCHER_DEFAULTS,
        "id": new_id(), "funder_id": body.funder_id, "decision_ref": body.decision_ref, "client_ref": body.client_ref,
        "category": body.category, "unit": CATEGORIES[body.category].value, "period": body.period.value,
        "valid_from": body.valid_from, "valid_until": body.valid_until, "status": domain.ISSUED,
        "issued_at": clock.now(), "voucher_code": new_code(), "decision_version": data.decision_version,
        **terms.columns(), "carry_over": body.carry_over, "age_band": body.age_band,
        "municipality_of_residence": body.municipality_of_residence})
    login_code = usecases._new_login_code(voucher, clock)
    rows.vouchers.append({c: getattr(voucher, c) for c in _VOUCHER_COLUMNS})
    rows.add_issued(dict(
        voucher_id=voucher.id, funder_id=voucher.funder_id, client_ref=voucher.client_ref,
        decision_ref=voucher.decision_ref, category=voucher.category, unit=voucher.unit,
        units_per_period=from_hundredths(voucher.units_per_period_x100), period=voucher.period,
        value_per_unit_cents=voucher.value_per_unit_cents, valid_from=voucher.valid_from,
        valid_until=voucher.valid_until, issued_at=voucher.issued_at, **terms.event_fields(),
        carry_over=voucher.carry_over, voucher_code=voucher.voucher_code, age_band=voucher.age_band,
        municipality_of_residence=voucher.municipality_of_residence))
    rows.audit.append(audit_row(principal, "voucher.issue", "voucher", voucher.id, voucher.funder_id, channel="bus"))
    accepted = _ACCEPTED.row(dict(
        funder_id=voucher.funder_id, decision_ref=voucher.decision_ref, decision_version=voucher.decision_version,
        voucher_id=voucher.id, voucher_code=shown_code(voucher.voucher_code), client_login_code=shown_code(login_code),
        status=voucher.status, outcome="issued"), envelope.id)
    _answer(rows, voucher.funder_id, accepted)
    rows.issued.append((voucher.id, voucher.funder_id, correlation_id_var.get()))


async def on_decisions(session: AsyncSession, items: list[tuple[Envelope, DecisionData]]) -> None:
    """A run of decisions in the consumer's transaction (one inbox claim for the run), with the outcome of
    ``on_decision`` one at a time in delivery order.

    The usual decision, a grant on a new decision reference from its own funder's case system, is made into
    rows and the run's rows are inserted a kind at a time (vouchers, outbox, audit: one statement each), so
    the run costs a handful of statements instead of a dozen per decision. Everything else goes through
    ``on_decision`` itself, in its place: a reference that has a voucher already or that two decisions of the
    run name (amendments, revocations, repeats, stale versions, in order), a funder not announced, a
    publisher that is not the decision's funder's case system. The rows gathered before such a decision are
    written first, so the outbox holds the replies in delivery order. A decision refused by the rules is
    answered by its own reply and the others proceed; only an error that is no refusal (the database, or a
    message nobody can be answered for) fails the run, which the consumer then retries one message at a
    time.

    A decision whose envelope asks for batched replies (``replymode`` ``batched``) has its reply listed in the run's
    ``DecisionReplies`` for its funder (``replies``), written after the run's other rows; the others' replies are
    rows of their own, as before."""
    consumer = current_consumer.get()
    settings = consumer.bus.settings if consumer else None
    batch = replies.RunReplies(SOURCE, getattr(settings, "decision_replies_per_message", 1000))
    token = replies.current_batch.set(None)
    try:
        await _on_decisions(session, items, settings, batch)
    finally:
        replies.current_batch.reset(token)


async def _on_decisions(session: AsyncSession, items: list[tuple[Envelope, DecisionData]], settings: Any,
                        batch: replies.RunReplies) -> None:
    messages = current_run.get()
    datas = [data for _env, data in items]
    keys = Counter((d.funder_id, d.decision_ref) for d in datas)
    funders = {d.funder_id for d in datas}
    known = set((await session.execute(sa.select(Funder.funder_id).where(Funder.funder_id.in_(funders))))
                .scalars().all())
    issued = set(tuple(r) for r in (await session.execute(sa.select(Voucher.funder_id, Voucher.decision_ref).where(
        sa.tuple_(Voucher.funder_id, Voucher.decision_ref).in_(list(keys))))).all())
    rows = _Rows(getattr(settings, "issued_events", "v2"), getattr(settings, "issued_event_vouchers", 1000))
    for (envelope, data), message in zip(items, messages, strict=True):
        bind_correlation(envelope.correlationid, causation_id=envelope.id)
        current_delivery.set(message)
        replies.current_batch.set(batch if getattr(envelope, "replymode", None) == BATCHED else None)
        key = (data.funder_id, data.decision_ref)
        publisher = _publisher(message)
        if (data.action != "grant" or keys[key] > 1 or key in issued or data.funder_id not in known
                or publisher is None or publisher != data.funder_id
                or publisher != funder_of_routing_key(message.routing_key)):
            await rows.write(session)
            await on_decision(session, envelope, data)
            continue
        principal = Principal(subject=message.user_id, roles=frozenset({Role.FUNDER_CASE_SYSTEM}),
                              funder_id=publisher)
        try:
            await _issue_row(session, principal, data, envelope, rows)
        except DomainError as exc:
            log.info("decision.rejected", reason=exc.reason, publisher_funder=publisher,
                     decision_version=data.decision_version)
            _answer(rows, publisher, _reply_row(DecisionRejected(
                funder_id=publisher, decision_ref=data.decision_ref, decision_version=data.decision_version,
                reason=exc.reason, message=exc.message, fields=exc.details.get("fields") or []), envelope.id))
            rows.audit.append(audit_row(principal, f"decision.reject.{exc.reason}", "decision", None, publisher,
                                        channel="bus"))
    replies.current_batch.set(None)
    if batch.listed:  # the batched replies last: after every event of the run (the vouchers they name announced)
        rows.outbox.extend(batch.rows())
    await rows.write(session)


DECISIONS_CONSUMER = ConsumerSpec(
    name="decisions", exchange=DECISIONS_EXCHANGE, bind_keys=[DECISION_BINDING],
    handlers={}, batch_handlers={DECISION_TYPE: on_decisions}, contracts={DECISION_TYPE: DecisionData},
    on_refused=on_decision_refused, whole_message_privacy=True, envelope=DecisionEnvelope,
)
