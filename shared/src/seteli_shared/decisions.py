"""The contract between municipal case systems and the platform on the bus: service decisions in,
replies out.

A funder's case system publishes a ``ServiceDecision`` (a CloudEvents 1.0 envelope of type
``fi.seteli.decision.v1`` whose ``data`` is a ``DecisionData``) to the topic exchange
``<ns>.decisions`` with routing key ``decision.<funder_id>``, as its own broker user
``funder-<funder_id>`` (``user_id`` set: the broker validates it). Fields not in the contract are
refused (``extra="forbid"``). The vouchers service answers each decision with a ``DecisionAccepted``
or a ``DecisionRejected`` envelope on the topic exchange ``<ns>.decision-replies`` with routing key
``reply.<funder_id>``; the funder's system reads them from its own queue
``<ns>.decision-replies.<funder_id>``, which only it may read: an accepted grant carries the client's
one-time login code.

**Batched replies (opted in by the publisher).** A decision whose envelope carries the CloudEvents extension
attribute ``replymode`` ``batched`` (``DecisionEnvelope``) is answered, with the other such decisions of the
same funder that the vouchers service takes in the same run, in one ``DecisionReplies`` message (type
``fi.seteli.decision.replies.v1``, same exchange and routing key) listing each decision's reply envelope
exactly as it would have been sent alone (its ``causationid`` the decision's id), at most the service's
``DECISION_REPLIES_PER_MESSAGE`` a message. Without the attribute (or with ``single``) every decision gets its
own reply, as before. A message refused before it can be read as a decision (a broken contract, a personal
identity code) is answered with its own ``DecisionRejected`` either way.

Decisions are idempotent by (funder, ``decision_ref``, ``decision_version``): the same version again
changes nothing and is answered again (without the login code, shown once); a higher version amends
the voucher (``action`` ``grant``) or ends it (``revoke``); a lower one is refused as
``stale_version``.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .catalogue import Period
from .events import TYPE_PREFIX, Category, Envelope, FunderId, ReceivedEnvelope, utcnow
from .ids import new_id
from .logging import correlation_id_var
from .schemas import BigCents, BusinessDate, Cents, Count, Units

DECISION_TYPE = TYPE_PREFIX + "decision.v1"
#: the message listing several decisions' replies (``DecisionReplies``), for case systems that ask for it
REPLIES_TYPE = TYPE_PREFIX + "decision.replies.v1"
#: the ``replymode`` a case system asks for one message of replies a run with
BATCHED = "batched"
#: the most replies the contract allows in one ``DecisionReplies`` (the service's setting is at most this)
MAX_REPLIES_A_MESSAGE = 5000
#: the exchanges, after the namespace (``<ns>.decisions``, ``<ns>.decision-replies``)
DECISIONS_EXCHANGE = "decisions"
REPLIES_EXCHANGE = "decision-replies"
#: what the vouchers service's decisions queue is bound to: one funder's word each
DECISION_BINDING = "decision.*"

Reference = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{2,63}$")]
# ASCII digits: a pattern's \d would take any script's digits
AgeBand = Annotated[str, StringConstraints(pattern=r"^([0-9]{1,3}-[0-9]{1,3}|[0-9]{1,3}\+)$")]
MunicipalityCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]


def decision_routing_key(funder_id: str) -> str:
    return f"decision.{funder_id}"


def reply_routing_key(funder_id: str) -> str:
    return f"reply.{funder_id}"


def reply_queue(namespace: str, funder_id: str) -> str:
    return f"{namespace}.{REPLIES_EXCHANGE}.{funder_id}"


def funder_of_routing_key(routing_key: str | None) -> str | None:
    """``decision.091`` (or ``decision.091.anything``) -> ``091``."""
    parts = (routing_key or "").split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "decision" and parts[1] else None


#: what a grant of each kind needs besides category and validity
_GRANT_NEEDS: dict[str, tuple[str, ...]] = {
    "service_voucher": ("units_per_period", "value_per_unit_cents"),
    "income_related": ("units_per_period", "value_table_version", "household_size", "gross_monthly_income_cents"),
    "client_voucher": ("units_per_period", "max_value_per_unit_cents", "client_fee_cents"),
    "personal_budget": ("budget_cents", "categories"),
}


class DecisionData(BaseModel):
    """A funder's service decision, as its case system sends it. Clients are pseudonymous: no name, no
    personal identity code (a message carrying one anywhere is refused and not kept)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    funder_id: FunderId
    decision_ref: Reference = Field(description="the funder's reference of the decision; with the version, "
                                                "what makes a decision idempotent")
    decision_version: Count = Field(ge=1, le=1_000_000, description="1 for the first decision; a higher one amends "
                                                                   "or revokes, a lower one is stale")
    action: Literal["grant", "revoke"]
    client_ref: Reference = Field(description="pseudonymous client reference issued by the funder; never a HETU")
    # statistical attributes, optional (never enough to identify anyone)
    age_band: AgeBand | None = Field(default=None, description='e.g. "65-74" or "90+"')
    municipality_of_residence: MunicipalityCode | None = Field(default=None, description="3-digit municipality code")
    # the voucher's terms: required for a grant
    category: Category | None = None
    units_per_period: Units | None = Field(default=None, gt=0, le=100000)
    period: Period = Period.MONTH
    value_per_unit_cents: Cents | None = Field(default=None, gt=0, le=10_000_000)
    valid_from: BusinessDate | None = None
    valid_until: BusinessDate | None = None
    rulebook_version: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")
    carry_over: bool = Field(default=False, description="monthly units only: the unused units of a month add to "
                                                        "the next month's")
    #: for a revocation: the first day the voucher is no longer in force (default: the day it is processed)
    effective_from: BusinessDate | None = None
    # ---- the voucher's kind (additive, optional: without it a service_voucher with value_per_unit_cents)
    kind: Literal["service_voucher", "income_related", "client_voucher", "personal_budget"] | None = Field(
        default=None, description="service_voucher (default): value_per_unit_cents; income_related: "
        "value_table_version, household_size, gross_monthly_income_cents (used to compute the value, never kept); "
        "client_voucher: max_value_per_unit_cents, client_fee_cents (per unit, paid to the funder); "
        "personal_budget: budget_cents, categories (no units_per_period)")
    value_table_version: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    household_size: Count | None = Field(default=None, ge=1, le=30)
    gross_monthly_income_cents: BigCents | None = Field(default=None, ge=0, le=100_000_000)
    max_value_per_unit_cents: Cents | None = Field(default=None, gt=0, le=10_000_000)
    client_fee_cents: Cents | None = Field(default=None, ge=0, le=10_000_000)
    budget_cents: BigCents | None = Field(default=None, gt=0, le=1_000_000_000)
    categories: list[Category] | None = Field(default=None, min_length=1, max_length=17)

    @model_validator(mode="after")
    def _terms_of_a_grant(self) -> "DecisionData":
        if self.action == "grant":
            needs = _GRANT_NEEDS[self.kind or "service_voucher"]
            missing = [f for f in ("category", *needs, "valid_from", "valid_until") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a grant needs {', '.join(missing)}")
        return self


ReplyMode = Literal["single", "batched"]
_REPLY_MODE_DESCRIPTION = (
    "CloudEvents extension attribute: how the case system wants this decision answered. `batched`: in one "
    "`fi.seteli.decision.replies.v1` message with the other decisions of the funder that the platform takes in "
    "the same run, each reply as it would have been sent alone; `single` or absent: its own "
    "`fi.seteli.decision.accepted.v1` / `fi.seteli.decision.rejected.v1` message (as before).")


class DecisionEnvelope(ReceivedEnvelope):
    """A decision's envelope as the vouchers service reads it: ``ReceivedEnvelope`` and the extension attribute
    ``replymode`` (any other value is refused, as a broken contract)."""

    replymode: ReplyMode | None = Field(default=None, description=_REPLY_MODE_DESCRIPTION)

    @property
    def batched_replies(self) -> bool:
        return self.replymode == BATCHED


class ServiceDecision(Envelope):
    """The CloudEvents envelope of a decision (``type`` ``fi.seteli.decision.v1``)."""

    type: Literal["fi.seteli.decision.v1"] = DECISION_TYPE  # type: ignore[assignment]
    data: DecisionData  # type: ignore[assignment]
    replymode: ReplyMode | None = Field(default=None, description=_REPLY_MODE_DESCRIPTION)


# ------------------------------------------------------------------ replies
class DecisionReply(BaseModel):
    """Base of the replies; ``reply_name`` gives the type ``fi.seteli.<reply_name>.v1``."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    reply_name: ClassVar[str]
    version: ClassVar[int] = 1
    registry: ClassVar[dict[str, type["DecisionReply"]]] = {}

    funder_id: FunderId
    decision_ref: str | None = None
    decision_version: int | None = None
    answered_at: datetime = Field(default_factory=utcnow)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "reply_name" in cls.__dict__:
            DecisionReply.registry[cls.reply_type()] = cls

    @classmethod
    def reply_type(cls) -> str:
        return f"{TYPE_PREFIX}{cls.reply_name}.v{cls.version}"

    def envelope(self, source: str, causation_id: str | None = None) -> Envelope:
        eid = new_id()
        return Envelope(id=eid, source=f"/seteli/{source}", type=self.reply_type(), subject=self.decision_ref,
                        data=self.model_dump(mode="json"), correlationid=correlation_id_var.get() or eid,
                        causationid=causation_id)


class DecisionAccepted(DecisionReply):
    """The decision took effect (or had already). ``client_login_code`` is the client's one-time login
    code for the decision letter: only in the answer to the decision that issued the voucher, never again
    (a new one: ``POST /vouchers/{id}/client-login-code``). Only the funder's own system can read it."""

    reply_name = "decision.accepted"
    voucher_id: str
    voucher_code: str | None
    client_login_code: str | None = None
    #: the voucher's status after the decision: issued, provider_chosen, revoked
    status: str
    #: what this decision did: issued, amended, revoked, or repeated (the same version again: nothing changed)
    outcome: Literal["issued", "amended", "revoked", "repeated"]


class DecisionRejected(DecisionReply):
    """The decision was refused; nothing of it was kept. ``reason`` is a code (``funder_mismatch``,
    ``unknown_publisher``, ``unknown_funder``, ``stale_version``, ``contract_violation``,
    ``personal_identity_code``, ``decision_conflict``, ``unknown_decision``, ``voucher_revoked``,
    ``invalid_validity``, ...; treat a code you do not know as a refusal); ``message`` and ``fields`` never
    repeat a value of the decision."""

    reply_name = "decision.rejected"
    reason: str = Field(description="a machine-readable code; new codes may be added within a version (treat an "
                        "unknown one as a refusal): funder_mismatch (the decision's funder, routing key and broker "
                        "user disagree), unknown_publisher (the broker user is no funder's case system the platform "
                        "knows: check BROKER_USER_PREFIX), unknown_funder, stale_version, decision_conflict, "
                        "unknown_decision, voucher_revoked, invalid_validity, contract_violation, unknown_type, "
                        "personal_identity_code, and the HTTP API's refusals of the same terms")
    message: str
    #: where the contract was broken (field names only), e.g. ``data.units_per_period``
    fields: list[str] = []


class _ListedReply(ReceivedEnvelope):
    time: datetime  # type: ignore[assignment]  (always sent)


class ListedAccepted(_ListedReply):
    """A ``fi.seteli.decision.accepted.v1`` envelope, as ``DecisionReplies`` lists it."""

    type: Literal["fi.seteli.decision.accepted.v1"]  # type: ignore[assignment]
    data: DecisionAccepted  # type: ignore[assignment]


class ListedRejected(_ListedReply):
    """A ``fi.seteli.decision.rejected.v1`` envelope, as ``DecisionReplies`` lists it."""

    type: Literal["fi.seteli.decision.rejected.v1"]  # type: ignore[assignment]
    data: DecisionRejected  # type: ignore[assignment]


class DecisionReplies(BaseModel):
    """The replies to several decisions of one funder's case system in one message, for a case system that asked
    for them so (the decision envelope's extension attribute ``replymode`` ``batched``): one message per funder a
    run of decisions the vouchers service takes together, at most its ``DECISION_REPLIES_PER_MESSAGE`` replies.
    Each item is the whole reply envelope the decision would have had alone (``fi.seteli.decision.accepted.v1``
    or ``fi.seteli.decision.rejected.v1``, its ``causationid`` the decision's id), in the order the decisions
    were taken; a reader matches each to its decision as it matches single replies."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    funder_id: FunderId
    replies: list[ListedAccepted | ListedRejected] = Field(min_length=1, max_length=MAX_REPLIES_A_MESSAGE)


_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def safe_location(loc: tuple | list) -> str | None:
    """A validation error's location, only when every part is a plain field name or an index (an
    unknown field's name is the sender's text: anything else is left out)."""
    parts = []
    for p in loc:
        if isinstance(p, int) or (isinstance(p, str) and _SAFE_NAME.match(p)):
            parts.append(str(p))
        else:
            return None
    return ".".join(parts) or None


EXAMPLE_DECISION: dict = {
    "specversion": "1.0", "id": "0b5c3f9e-9d8e-4c3b-8a61-2f0d1e6b7a10", "source": "/kunta-091/case-system",
    "type": DECISION_TYPE, "time": "2026-03-02T09:15:00Z", "datacontenttype": "application/json",
    "data": {"funder_id": "091", "decision_ref": "HKI-2026-000123", "decision_version": 1, "action": "grant",
             "client_ref": "asiakas-8f3a21", "age_band": "75-84", "municipality_of_residence": "091",
             "category": "home_care", "units_per_period": "20", "period": "month", "value_per_unit_cents": 2500,
             "valid_from": "2026-03-01", "valid_until": "2027-02-28", "rulebook_version": "2026.1"},
}
EXAMPLE_ACCEPTED: dict = {
    "funder_id": "091", "decision_ref": "HKI-2026-000123", "decision_version": 1,
    "answered_at": "2026-03-02T09:15:01Z", "voucher_id": "6f1d2c4e-3b7a-4f0e-9a51-7c2e8d9b0a11",
    "voucher_code": "7KQ2M9XH4DW", "client_login_code": "R4WN8HZD2KQ5M", "status": "issued", "outcome": "issued",
}
#: examples of refusals: a broken contract, a case system sending another funder's decision, a broker user
#: the platform does not know as a case system, an older version, a personal identity code
EXAMPLES_REJECTED: list[dict] = [
    {"funder_id": "091", "decision_ref": "HKI-2026-000124", "decision_version": 1,
     "answered_at": "2026-03-02T09:16:01Z", "reason": "contract_violation",
     "message": "the decision breaks the contract: extra_forbidden at data.diagnosis", "fields": ["data.diagnosis"]},
    {"funder_id": "091", "decision_ref": "HKI-2026-000125", "decision_version": 1,
     "answered_at": "2026-03-02T09:17:01Z", "reason": "funder_mismatch",
     "message": "a case system may send only its own funder's decisions, with its own routing key "
                "decision.<funder_id>", "fields": []},
    {"funder_id": "091", "decision_ref": "HKI-2026-000126", "decision_version": 1,
     "answered_at": "2026-03-02T09:18:01Z", "reason": "unknown_publisher",
     "message": "the broker user kunta-funder-091 is no funder's case system here: the platform knows them as "
                "funder-<funder_id> (BROKER_USER_PREFIX '')", "fields": []},
    {"funder_id": "091", "decision_ref": "HKI-2026-000123", "decision_version": 1,
     "answered_at": "2026-04-02T09:15:01Z", "reason": "stale_version",
     "message": "version 2 of this decision has been applied: an older one changes nothing", "fields": []},
    {"funder_id": "091", "decision_ref": None, "decision_version": 1, "answered_at": "2026-03-02T09:19:01Z",
     "reason": "personal_identity_code",
     "message": "the decision carried a personal identity code: clients are known only by pseudonymous references; "
                "nothing of it was kept", "fields": []},
]
EXAMPLE_REJECTED: dict = EXAMPLES_REJECTED[0]
