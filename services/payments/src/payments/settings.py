from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator
from stdnum import iban
from stdnum.exceptions import ValidationError
from stdnum.fi import ytunnus

from seteli_shared.settings import ServiceSettings

#: the development key of the Idempotency-Key hashes (``IDEMPOTENCY_KEY_SECRET``); refused in production
DEV_IDEMPOTENCY_KEY_SECRET = "seteli-development-idempotency-key-secret-do-not-use"


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    #: the operator's fee on settled value (5 % in the seed); per-funder contracts come later
    operator_fee_rate: Decimal = Field(default=Decimal("0.05"), ge=0, lt=1)
    #: a charge is retried once on a dropped connection (``usecases.charge_voucher``): no round trip per checkout
    db_pool_pre_ping: bool = False
    #: charges come in many at once (a provider's billing system): connections for them, the relay and the consumer
    db_pool_size: int = Field(default=20, ge=1)
    # ---- settlement runs and payouts (payouts.py, settlement.py)
    #: the daily settlement run's time of day (UTC, HH:MM); the scheduler is off when ENVIRONMENT=test
    settlement_daily_at: str = Field(default="03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    settlement_scheduler: bool = True
    #: payouts under this (net, cents) wait for a later run, unless the guarantee is due
    min_payout_cents: int = Field(default=4000, ge=0)
    #: a charge accepted on day D is paid by D + this many days
    settlement_guarantee_days: int = Field(default=14, ge=1)
    #: the guarantee releases a held-back payout this many days before its deadline (a failed run's slack)
    settlement_guarantee_margin_days: int = Field(default=2, ge=0)
    #: ``GET /settlements/at-risk``: unpaid charges with at most this many days left to their deadline
    settlement_at_risk_days: int = Field(default=3, ge=0)
    #: what a settlement announces of its charges (``SETTLED_EVENTS``): ``v2`` one ``ChargesSettled``
    #: (``charge.settled.v2``) per settlement, in chunks of ``SETTLED_EVENT_CHARGES`` charges; ``v1`` one
    #: ``ChargeSettled`` per charge (as before); ``both`` each (the rollout: update reporting first, then switch
    #: payments; README "Rolling updates")
    settled_events: Literal["v2", "v1", "both"] = "v2"
    #: at most this many charges in one ``charge.settled.v2`` (about 160 bytes a charge: 1,000 is ~160 kB of
    #: body, well under the consumers' 4 MB batch limit and RabbitMQ's max_message_size; the contract allows 5,000)
    settled_event_charges: int = Field(default=1000, ge=1, le=5000)
    #: what a bulk intake (JSON bulk, CSV) announces of the charges it accepts (``ACCEPTED_EVENTS``): ``v2`` one
    #: ``ChargesAccepted`` (``charge.accepted.v2``) per funder in each transaction, in chunks of
    #: ``ACCEPTED_EVENT_CHARGES`` charges; ``v1`` one ``ChargeAccepted`` per charge (as before); ``both`` each (the
    #: rollout: update vouchers and reporting first, then switch payments). A single ``POST /charges`` writes v1; with
    #: ``v2`` the relay publishes the v1 rows it reads together as v2 (``relay_coalesce``).
    accepted_events: Literal["v2", "v1", "both"] = "v2"
    #: at most this many charges in one ``charge.accepted.v2`` (about 400 bytes a charge: 1,000 is ~400 kB of body,
    #: under the consumers' 4 MB batch limit and RabbitMQ's max_message_size; the contract allows 5,000)
    accepted_event_charges: int = Field(default=1000, ge=1, le=5000)
    #: the relay publishes the ``charge.accepted.v1`` rows of single charges that one of its batches reads together
    #: as ``charge.accepted.v2`` (per funder and provider, at most ``ACCEPTED_EVENT_CHARGES`` a message) when
    #: ``ACCEPTED_EVENTS`` is ``v2`` (``charging.coalesce``); with ``v1`` or ``both`` each stays a message of its own
    relay_coalesce: str = "payments.charging.coalesce:accepted_coalescer"
    #: payments' relay waits 0.25 s (not the library's 0.02) after a commit before it reads the outbox, so that at a few
    #: hundred single charges a second a batch holds tens of charges per provider to coalesce (one message for each
    #: provider's run): the consumers' CPU a charge halves again against 0.1 s, and the relay claims, publishes and
    #: marks a fifth as often (bench/README.md, "issue 19 item 5, linger") for up to 0.25 s more before a charge
    #: reaches the read models (its HTTP answer does not wait for the relay)
    relay_linger_seconds: float = Field(default=0.25, ge=0)
    #: the operator's account the payment files pay from (pain.001 debtor)
    payer_name: str = "Seteli Palvelut Oy"
    payer_iban: str = "FI4950009420028730"
    payer_bic: str = "OKOYFIHH"
    # ---- funders' invoices (invoicing/): the operator as their seller
    #: the operator's business ID (Y-tunnus, checked) and postal address; the account is ``payer_iban``
    operator_business_id: str = "2617416-4"
    operator_street: str = "Esimerkkikatu 1"
    operator_postcode: str = Field(default="00100", pattern=r"^[0-9]{5}$")
    operator_town: str = "Helsinki"
    #: payment terms of an invoice: due this many days after its date, net
    invoice_payment_terms_days: int = Field(default=14, ge=0, le=365)
    #: Finvoice: the operator's e-invoicing operator (intermediator; default: its bank's BIC), the funders' e-invoice
    #: addresses as ``{"091": "003701234567@TAPIFI2S"}`` (address@intermediator; MessageTransmissionDetails is
    #: written for a funder listed), and which reference EpiRemittanceInfoIdentifier carries: SPY (Finnish) or ISO (RF)
    finvoice_intermediator: str | None = None
    funder_einvoice_addresses: dict[str, str] = Field(default_factory=dict)
    finvoice_reference_scheme: Literal["SPY", "ISO"] = "ISO"
    #: the first number of the invoice series (at least 3 digits: the Finnish reference is built on it)
    invoice_number_start: int = Field(default=1000, ge=100)
    #: the bank holidays besides TARGET2's whose days a payment file never asks for (ISO 3166 codes of the
    #: ``holidays`` package; ``settlement.banking_days``): the operator's and the providers' banks are Finnish
    bank_holiday_countries: tuple[str, ...] = ("FI",)
    #: a correction no payout has offset this many days after it was made is claimed back (banking.py; 0: never)
    recovery_after_days: int = Field(default=60, ge=0)
    #: a recovery claim is due this many days after it is made
    recovery_payment_days: int = Field(default=14, ge=1)
    # ---- notices nobody can receive yet (notices.py): parked, listed, tried again
    #: notices to providers' queues are parked after OUTBOX_PARK_AFTER_ATTEMPTS unroutable attempts
    outbox_park_exchanges: tuple[str, ...] = ("notices",)
    #: parked notices (queue and webhook) are tried again this often, quietly (seconds; 0: only when asked)
    notice_parked_retry_seconds: float = Field(default=3600.0, ge=0)
    # ---- settlement notices to providers' webhooks (notices.py, egress.py)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    #: after ``POST /providers/{id}/webhook/secret`` the old secret still signs deliveries (beside the new one)
    #: this long, so that the provider's receiver can change over without refusing a notice
    webhook_secret_grace_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    #: a delivery that has failed this many times is parked (``notices``)
    webhook_max_attempts: int = Field(default=8, ge=1)
    #: a delivery's whole exchange (connecting, sending, the answer) at most this long; resolving the host takes at
    #: most the connect timeout besides
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    #: of a receiver's answer at most this much is read (the rest is not)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)
    #: plain http webhooks (development and test only: refused when ENVIRONMENT=production)
    webhook_allow_http: bool = False
    #: webhooks at this machine's loopback addresses, 127.0.0.0/8 and ::1 (development and test only: the tests'
    #: receivers); private, link-local and other non-public addresses are refused whatever this says
    webhook_allow_loopback: bool = False
    # ---- Idempotency-Key records (intake.py)
    #: the key of the HMAC-SHA256 under which a caller's Idempotency-Key is kept (never the key itself); at
    #: least 32 characters, and the development default is refused, when ENVIRONMENT=production
    idempotency_key_secret: str = DEV_IDEMPOTENCY_KEY_SECRET
    #: how long a key answers its first answer again; the purge then removes its record
    idempotency_retention_hours: int = Field(default=24, ge=1)
    #: the purge of expired Idempotency-Key records runs this often (seconds; 0: never)
    idempotency_purge_interval_seconds: float = Field(default=3600.0, ge=0)

    @field_validator("operator_business_id")
    @classmethod
    def _business_id(cls, value: str) -> str:
        try:
            return ytunnus.format(ytunnus.validate(value))
        except ValidationError as exc:
            raise ValueError(f"OPERATOR_BUSINESS_ID is not a valid Y-tunnus: {exc}") from None

    @field_validator("payer_iban")
    @classmethod
    def _iban(cls, value: str) -> str:
        try:
            return iban.validate(value)
        except ValidationError as exc:
            raise ValueError(f"PAYER_IBAN is not a valid IBAN: {exc}") from None

    @model_validator(mode="after")
    def _coalesce_options(self) -> "PaymentsSettings":
        """The relay's hook takes what it needs from these settings (its child process sees only the shared ones)."""
        if "relay_coalesce_options" not in self.model_fields_set:
            self.relay_coalesce_options = {"events": self.accepted_events, "per_event": self.accepted_event_charges}
        return self

    @model_validator(mode="after")
    def _production_keys(self) -> "PaymentsSettings":
        if self.environment == "production" and (self.idempotency_key_secret == DEV_IDEMPOTENCY_KEY_SECRET
                                                 or len(self.idempotency_key_secret) < 32):
            raise ValueError("IDEMPOTENCY_KEY_SECRET must be set (at least 32 characters) when ENVIRONMENT=production")
        if self.environment == "production" and (self.webhook_allow_http or self.webhook_allow_loopback):
            raise ValueError("WEBHOOK_ALLOW_HTTP and WEBHOOK_ALLOW_LOOPBACK are for development and test only")
        return self
