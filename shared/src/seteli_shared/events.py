"""Event contracts: every event a pydantic model, defined once, wrapped in a CloudEvents 1.0
envelope that is the JSON body of the AMQP message.

The ``type`` carries a version (``fi.seteli.voucher.issued.v1``); the routing key is the same
without the prefix (``voucher.issued.v1``). An additive change keeps the version; a breaking
change adds ``.v2``. Consumers ignore unknown fields.
"""
from __future__ import annotations

from copy import copy
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from .ids import new_id
from .logging import causation_id_var, correlation_id_var

TYPE_PREFIX = "fi.seteli."

FunderId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,40}$")]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    """Base of every domain event. Subclasses set ``event_name`` (``aggregate.action``), ``version`` and
    ``producer``: the one service that publishes it (a name in ``manifest.NAMES``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_name: ClassVar[str]
    version: ClassVar[int] = 1
    producer: ClassVar[str]
    registry: ClassVar[dict[str, type["Event"]]] = {}
    #: an event that lists several resources (a version 2 event standing for several version 1 events): the list's
    #: field and each item's id field; a consumer's audit trail records a row per item (``audit.record_bus``)
    audit_items: ClassVar[tuple[str, str] | None] = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "event_name" in cls.__dict__:
            Event.registry[cls.event_type()] = cls

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.event_name}.v{cls.version}"

    @classmethod
    def event_type(cls) -> str:
        return TYPE_PREFIX + cls.routing_key()

    def subject(self) -> str | None:
        return None


class Envelope(BaseModel):
    """CloudEvents 1.0 structured-mode JSON, with the correlation extension. The defaults are for envelopes
    made here; one that arrives is read with ``ReceivedEnvelope``, which requires what CloudEvents does."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id)
    source: str
    type: str
    time: datetime = Field(default_factory=utcnow)
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any]
    correlationid: str | None = None
    causationid: str | None = None

    @classmethod
    def wrap(cls, event: Event, source: str) -> "Envelope":
        eid = new_id()
        return cls(
            id=eid,
            source=f"/seteli/{source}",
            type=event.event_type(),
            subject=event.subject(),
            data=event.model_dump(mode="json"),
            correlationid=correlation_id_var.get() or eid,
            causationid=causation_id_var.get(),
        )

    @property
    def routing_key(self) -> str:
        return self.type.removeprefix(TYPE_PREFIX)

    def event(self) -> Event:
        """The typed event; raises KeyError for an unknown type, ValidationError for bad data."""
        return Event.registry[self.type].model_validate(self.data)


class ReceivedEnvelope(Envelope):
    """An envelope as it arrives on the bus: CloudEvents 1.0 requires ``specversion`` (``1.0``), ``id``,
    ``source`` and ``type``, each a non-empty string, and the platform's messages carry ``data``. Without
    an ``id`` a redelivery could not be told from a new message (the inbox deduplicates by it), so a message
    lacking one is refused rather than given one here. The published schemas are made from this model."""

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=500)
    type: str = Field(min_length=1, max_length=200)


# ---------------------------------------------------------------- registry
class FunderRegistered(Event):
    """A funder (municipality or wellbeing services county) entered the register with its contract
    terms. Other services accept vouchers, approvals and charges only for funders they know from this."""

    event_name = "funder.registered"
    producer = "registry"
    funder_id: FunderId
    name: str
    kind: str  # "municipality" | "wellbeing_services_county" | "joint_authority"
    operator_fee_rate: Decimal
    registered_at: datetime
    #: the contract's charging deadline: a service must be charged within this many days of its date
    #: (additive: None from a registry that does not send it; payments then takes its default, 90)
    charge_deadline_days: int | None = None

    def subject(self) -> str:
        return self.funder_id


class FunderTermsChanged(Event):
    """A registered funder's contract terms changed (operator staff, on a new contract): the fee rate on
    settled value, the settlement days and the charging deadline, all as they stand now. A consumer keeps
    the latest by ``changed_at`` (a ``FunderRegistered`` heard after it is older)."""

    event_name = "funder.terms_changed"
    producer = "registry"
    funder_id: FunderId
    operator_fee_rate: Decimal
    settlement_days: int
    charge_deadline_days: int
    changed_at: datetime

    def subject(self) -> str:
        return self.funder_id


class ProviderRegistered(Event):
    event_name = "provider.registered"
    producer = "registry"
    provider_id: str
    business_id: str
    name: str
    registered_at: datetime
    #: the account settlements are paid to (additive: None from a registry that does not send it yet)
    iban: str | None = None
    bic: str | None = None

    def subject(self) -> str:
        return self.provider_id


class ProviderUpdated(Event):
    """A provider's register data changed (contact, insurance, prepayment register, languages, areas,
    service units). ``changed`` names the fields that changed; the rest is what the comparison needs."""

    event_name = "provider.updated"
    producer = "registry"
    provider_id: str
    changed: list[str]
    languages: list[str] = []
    municipalities: list[str] = []
    updated_at: datetime
    #: the provider's name when it changed (None: unchanged, or a registry that does not send it yet)
    name: str | None = None
    #: the provider's current account for settlements (additive: None from a registry that does not send it)
    iban: str | None = None
    bic: str | None = None

    def subject(self) -> str:
        return self.provider_id


class RulebookPublished(Event):
    """A funder published a version of its rulebook (terms) for a service category; a funder uses a
    category for vouchers once it has a rulebook for it. Providers accept a version when they apply."""

    event_name = "rulebook.published"
    producer = "registry"
    funder_id: FunderId
    category: Category
    rulebook_version: str
    title: str
    #: whether a provider's price changes need the funder's approval before they take effect
    price_changes_need_approval: bool = False
    published_at: datetime

    def subject(self) -> str:
        return self.funder_id


class ProviderApplied(Event):
    """A provider submitted an application to a funder for categories, accepting rulebook versions."""

    event_name = "provider.applied"
    producer = "registry"
    application_id: str
    provider_id: str
    funder_id: FunderId
    categories: list[Category]
    #: category -> the rulebook version the provider accepted
    rulebook_versions: dict[str, str]
    submitted_at: datetime

    def subject(self) -> str:
        return self.provider_id


class ProviderApproved(Event):
    """A funder approved a provider for one service category: from now on it may be chosen and charge."""

    event_name = "provider.approved"
    producer = "registry"
    approval_id: str
    provider_id: str
    funder_id: FunderId
    category: Category
    approved_at: datetime
    application_id: str | None = None
    rulebook_version: str | None = None

    def subject(self) -> str:
        return self.provider_id


class ProviderRejected(Event):
    """A funder rejected an application (all its categories), with a reason code and text."""

    event_name = "provider.rejected"
    producer = "registry"
    application_id: str
    provider_id: str
    funder_id: FunderId
    categories: list[Category]
    reason: str
    rejected_at: datetime

    def subject(self) -> str:
        return self.provider_id


class ProviderSuspended(Event):
    """An approval is suspended from a date: the provider may not be chosen, nor charge for services
    delivered on or after ``effective_from``, until reinstated. ``reason`` is a code
    (e.g. ``insurance_lapsed``, ``prepayment_register_check_outdated``, ``funder_decision``)."""

    event_name = "provider.suspended"
    producer = "registry"
    approval_id: str
    provider_id: str
    funder_id: FunderId
    category: Category
    reason: str
    effective_from: date
    suspended_at: datetime

    def subject(self) -> str:
        return self.provider_id


class ProviderReinstated(Event):
    """A suspended approval is in force again."""

    event_name = "provider.reinstated"
    producer = "registry"
    approval_id: str
    provider_id: str
    funder_id: FunderId
    category: Category
    reinstated_at: datetime

    def subject(self) -> str:
        return self.provider_id


class ProviderRevoked(Event):
    """An approval ends for good from a date (services delivered before it may still be charged)."""

    event_name = "provider.revoked"
    producer = "registry"
    approval_id: str
    provider_id: str
    funder_id: FunderId
    category: Category
    reason: str
    effective_from: date
    revoked_at: datetime

    def subject(self) -> str:
        return self.provider_id


class PriceListPublished(Event):
    """A provider's price for a funder and category takes effect from a date (the whole history is
    kept: each publication is a new price list). ``tariffs`` optionally overrides the base price by
    time of day: keys ``weekday``, ``weekday_evening``, ``saturday``, ``sunday``; cents per unit."""

    event_name = "price_list.published"
    producer = "registry"
    price_list_id: str
    provider_id: str
    funder_id: FunderId
    category: Category
    unit: str
    unit_price_cents: int
    tariffs: dict[str, int] = {}
    effective_from: date
    published_at: datetime

    def subject(self) -> str:
        return self.provider_id


# ---------------------------------------------------------------- vouchers
class VoucherIssued(Event):
    event_name = "voucher.issued"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    client_ref: str
    decision_ref: str
    category: Category
    unit: str
    units_per_period: Decimal
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    issued_at: datetime
    # ---- the voucher's kind (additive; absent on events from before kinds: a service_voucher)
    #: service_voucher | income_related | client_voucher | personal_budget
    kind: str | None = None
    #: income_related: the funder's formula table version the value came from (never the income)
    value_table_version: str | None = None
    #: client_voucher: the funder's maximum per unit, and the client's fixed fee per unit to the funder
    max_value_per_unit_cents: int | None = None
    client_fee_cents: int | None = None
    #: personal_budget: the money per period (month or validity) and the categories it may be spent on
    budget_cents: int | None = None
    categories: list[Category] | None = None
    #: the funder's rule: the unused units of a month add to the next month's (monthly units only)
    carry_over: bool = False
    #: the code the client gives its provider (additive): payments lets the chosen provider charge by it
    voucher_code: str | None = None
    #: the decision's optional statistical attributes (additive; never identifying on their own):
    #: the client's age band (e.g. "75-84", "90+") and 3-digit municipality of residence code
    age_band: str | None = None
    municipality_of_residence: str | None = None

    def subject(self) -> str:
        return self.voucher_id


#: One voucher of a ``VouchersIssued``: what a ``VoucherIssued`` says of it beyond its funder. Made from
#: ``VoucherIssued``'s own fields (every one but the funder, with the same types, defaults and rules, in its order),
#: so a field added to version 1 is listed by version 2 as well.
IssuedVoucher = create_model(
    "IssuedVoucher", __module__=__name__,
    __config__=ConfigDict(extra="ignore", frozen=True),
    __doc__="One voucher of a ``VouchersIssued``: what a ``VoucherIssued`` says of it beyond its funder (every field,\n"
            "    with the same meaning, defaults and rules).",
    **{name: (f.annotation, copy(f)) for name, f in VoucherIssued.model_fields.items() if name != "funder_id"})


class VouchersIssued(Event):
    """Version 2 of ``voucher.issued``: the vouchers one run of decisions from a funder's case system issued for
    that funder (``vouchers.decisions.on_decisions``), up to 5,000 in an event, where version 1 is one event per
    voucher. A consumer folds each voucher listed as the ``VoucherIssued`` it stands for (``each()``, in the listed
    order, which is the order they were issued in), so a voucher heard in both versions (the producer emits both
    while consumers move over) counts once where the fold is idempotent per voucher, as payments' projection and
    reporting's are. The vouchers service publishes it for a run's new grants by default (``ISSUED_EVENTS=v2``), in
    the run's transaction, before the run's replies, at most ``ISSUED_EVENT_VOUCHERS`` (1,000) vouchers an event:
    about 600 bytes a voucher. A run with one new voucher of a funder, a voucher issued over HTTP and a decision
    taken one at a time (an amendment's reference, a repeat) still publish version 1. A consumer's audit trail
    records each voucher listed (``audit_items``), as it recorded each version 1 event."""

    event_name = "voucher.issued"
    version = 2
    producer = "vouchers"
    funder_id: FunderId
    vouchers: list[IssuedVoucher] = Field(min_length=1, max_length=5000)

    each_event: ClassVar[type[Event]] = VoucherIssued
    each_common: ClassVar[tuple[str, ...]] = ("funder_id",)
    audit_items: ClassVar[tuple[str, str] | None] = ("vouchers", "voucher_id")

    def each(self) -> list[VoucherIssued]:
        """The ``VoucherIssued`` of each voucher listed, in the listed order (not validated again: its parts are)."""
        return each_listed(self, "vouchers")


class VoucherProviderChosen(Event):
    event_name = "voucher.provider_chosen"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    provider_id: str
    category: Category
    chosen_at: datetime
    #: the first service date the choice covers (the day of the choice); services before it stay the
    #: previous provider's to charge. None (older events): the day of ``chosen_at``
    effective_from: date | None = None
    #: the provider chosen before (a switch), if any
    previous_provider_id: str | None = None

    def subject(self) -> str:
        return self.voucher_id


class VoucherAmended(Event):
    """A later version of the voucher's decision changed its terms (units, validity, value per unit).
    ``decision_version`` only grows: a projection applies an amendment newer than what it holds."""

    event_name = "voucher.amended"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    decision_ref: str
    decision_version: int
    category: Category
    units_per_period: Decimal
    period: str
    value_per_unit_cents: int
    valid_from: date
    valid_until: date
    amended_at: datetime
    carry_over: bool = False

    def subject(self) -> str:
        return self.voucher_id


class VoucherRevoked(Event):
    """The funder revoked the voucher's decision: the voucher is not in force from ``effective_from``
    (services delivered before it may still be charged, within the grace the charging rules allow)."""

    event_name = "voucher.revoked"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    decision_ref: str
    decision_version: int
    category: Category
    effective_from: date
    revoked_at: datetime

    def subject(self) -> str:
        return self.voucher_id


class VoucherExpired(Event):
    """The voucher's validity has passed (the daily expiry job): it can no longer be chosen; services
    delivered inside its validity may still be charged."""

    event_name = "voucher.expired"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    category: Category
    valid_until: date
    expired_at: datetime

    def subject(self) -> str:
        return self.voucher_id


class VoucherExhausted(Event):
    """A voucher whose units are for its whole validity has had them all charged."""

    event_name = "voucher.exhausted"
    producer = "vouchers"
    voucher_id: str
    funder_id: FunderId
    category: Category
    units_used: Decimal
    exhausted_at: datetime

    def subject(self) -> str:
        return self.voucher_id


# ---------------------------------------------------------------- payments
class ChargeAccepted(Event):
    """Version 1 of ``charge.accepted``: one event per accepted charge. Payments publishes it for a single
    ``POST /charges``, and for its bulk paths only with ``ACCEPTED_EVENTS=v1`` or ``both`` (their default is
    version 2, ``ChargesAccepted``); consumers accept both (docs/CONTRACT-CHANGELOG.md 1.5.0)."""

    event_name = "charge.accepted"
    producer = "payments"
    charge_id: str
    voucher_id: str
    funder_id: FunderId
    provider_id: str
    category: Category
    service_date: date
    units: Decimal
    unit_price_cents: int
    amount_cents: int
    own_share_cents: int
    accepted_at: datetime
    #: the tariff the provider charged (weekday, weekday_evening, saturday, sunday), if any
    tariff: str | None = None
    #: whether a price list of the provider's was in force on the service date (None: before this was recorded)
    price_registered: bool | None = None
    #: the registered price the charge was checked against, and its list
    registered_price_cents: int | None = None
    price_list_id: str | None = None
    #: a client voucher's charge: the client's fixed fee (per unit) for these units, owed to the funder
    client_fee_cents: int | None = None

    def subject(self) -> str:
        return self.charge_id


def each_listed(many: Event, listed: str = "charges") -> list:
    """The version 1 event of each item (charge, voucher) a version 2 event lists in its field ``listed``, in the
    listed order: its ``each_event`` built from the fields it shares with all of them (``each_common``) and the
    item's own, without validating again (its parts are validated)."""
    common = {name: getattr(many, name) for name in many.each_common}
    build = many.each_event.model_construct
    return [build(**common, **dict(c)) for c in getattr(many, listed)]


class AcceptedCharge(BaseModel):
    """One charge of a ``ChargesAccepted``: what a ``ChargeAccepted`` says of it beyond its funder and provider."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    charge_id: str
    voucher_id: str
    category: Category
    service_date: date
    units: Decimal
    unit_price_cents: int
    amount_cents: int
    own_share_cents: int
    accepted_at: datetime
    tariff: str | None = None
    price_registered: bool | None = None
    registered_price_cents: int | None = None
    price_list_id: str | None = None
    client_fee_cents: int | None = None


class ChargesAccepted(Event):
    """Version 2 of ``charge.accepted``: charges one bulk intake transaction accepted for one provider with one
    funder, up to 5,000 in an event, where version 1 is one event per charge. A consumer folds each charge listed
    as the ``ChargeAccepted`` it stands for (``each()``, in the listed order, which is the order they were
    accepted in), so a charge heard in both versions (the producer emits both while consumers move over) counts
    once where the fold is idempotent per charge, as vouchers' usage and reporting's are. Payments publishes it
    for its bulk paths (JSON bulk and CSV) by default (``ACCEPTED_EVENTS=v2``), in the chunk's transaction, at
    most ``ACCEPTED_EVENT_CHARGES`` (1,000) charges an event: about 400 bytes a charge, so ~400 kB a message. A
    single ``POST /charges`` still publishes version 1."""

    event_name = "charge.accepted"
    version = 2
    producer = "payments"
    funder_id: FunderId
    provider_id: str
    charges: list[AcceptedCharge] = Field(min_length=1, max_length=5000)

    each_event: ClassVar[type[Event]] = ChargeAccepted
    each_common: ClassVar[tuple[str, ...]] = ("funder_id", "provider_id")

    def each(self) -> list[ChargeAccepted]:
        return each_listed(self)


class ChargeSettled(Event):
    """Version 1 of ``charge.settled``: one event per settled charge. Payments publishes it only with
    ``SETTLED_EVENTS=v1`` or ``both`` (the default is version 2, ``ChargesSettled``); consumers accept it until
    2027-12-07 (docs/CONTRACT-CHANGELOG.md 1.4.0)."""

    event_name = "charge.settled"
    producer = "payments"
    charge_id: str
    settlement_id: str
    voucher_id: str
    funder_id: FunderId
    provider_id: str
    category: Category
    gross_cents: int
    fee_cents: int
    net_cents: int
    settled_at: datetime

    def subject(self) -> str:
        return self.charge_id


class SettledCharge(BaseModel):
    """One charge of a ``ChargesSettled``: what a ``ChargeSettled`` says of it beyond its settlement."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    charge_id: str
    voucher_id: str
    category: Category
    gross_cents: int
    fee_cents: int
    net_cents: int


class ChargesSettled(Event):
    """Version 2 of ``charge.settled``: the charges one settlement settled (one provider's with one funder), up to
    5,000 in an event (a larger settlement is several events), where version 1 is one event per charge.
    A consumer folds each charge listed as the ``ChargeSettled`` it stands for (``each()``), so a charge heard in
    both versions (the producer emits both while consumers move over) counts once where the fold is idempotent
    per charge, as reporting's is. The point is the bus: a month-end of a million charges is a few hundred
    messages instead of a million (bench/README.md, ``charge_events.py``). Payments publishes it by default
    (``SETTLED_EVENTS=v2``), in the settlement's transaction, at most ``SETTLED_EVENT_CHARGES`` (1,000) charges
    an event: about 160 bytes a charge, so ~160 kB a message."""

    event_name = "charge.settled"
    version = 2
    producer = "payments"
    settlement_id: str
    funder_id: FunderId
    provider_id: str
    settled_at: datetime
    charges: list[SettledCharge] = Field(min_length=1, max_length=5000)

    def subject(self) -> str:
        return self.settlement_id

    each_event: ClassVar[type[Event]] = ChargeSettled
    each_common: ClassVar[tuple[str, ...]] = ("settlement_id", "funder_id", "provider_id", "settled_at")

    def each(self) -> list[ChargeSettled]:
        return each_listed(self)


class ChargeCancelled(Event):
    """A provider cancelled one of its unsettled charges: its ledger entry is reversed and its units and
    money no longer count against the voucher."""

    event_name = "charge.cancelled"
    producer = "payments"
    charge_id: str
    voucher_id: str
    funder_id: FunderId
    provider_id: str
    category: Category
    service_date: date
    units: Decimal
    amount_cents: int
    cancelled_at: datetime

    def subject(self) -> str:
        return self.charge_id


class ChargeCorrected(Event):
    """A settled charge was corrected (fully reversed, or fewer units / a lower amount): the difference is
    a reversing ledger entry, and it offsets the provider's next settlement with the funder. The units,
    money and own share it removes no longer count against the voucher; ``*_after`` are the charge's
    figures after this correction (a fold may take the minimum, whatever order corrections arrive in)."""

    event_name = "charge.corrected"
    producer = "payments"
    correction_id: str
    charge_id: str
    voucher_id: str
    funder_id: FunderId
    provider_id: str
    category: Category
    service_date: date
    #: ``reversal`` (the whole charge) or ``partial`` (fewer units or a lower amount)
    kind: str
    reason: str
    #: what the correction removes (positive figures)
    units: Decimal
    amount_cents: int
    own_share_cents: int
    client_fee_cents: int | None = None
    #: the part of the fee the operator gives back, and what the provider's next payout is reduced by
    fee_cents: int
    net_cents: int
    #: the charge after the correction
    units_after: Decimal
    amount_cents_after: int
    own_share_cents_after: int
    #: the settlement the charge was paid in
    settlement_id: str
    corrected_at: datetime

    def subject(self) -> str:
        return self.charge_id


class SettlementCreated(Event):
    """One provider's settlement with one funder: the basis of its settlement notice and payout."""

    event_name = "settlement.created"
    producer = "payments"
    settlement_id: str
    funder_id: FunderId
    provider_id: str
    charge_count: int
    gross_cents: int
    fee_cents: int
    net_cents: int
    fee_rate: Decimal
    created_at: datetime

    def subject(self) -> str:
        return self.settlement_id


ALL_EVENTS: tuple[type[Event], ...] = tuple(Event.registry.values())


def routing_keys_of(event_types) -> list[str]:  # noqa: ANN001
    """The routing keys a queue needs to receive these event types (in their order, once each)."""
    return list(dict.fromkeys(Event.registry[t].routing_key() for t in event_types))
