from typing import Literal

from pydantic import Field, field_validator

from seteli_shared.addresses import TrustedProxies
from seteli_shared.settings import ServiceSettings


class VouchersSettings(ServiceSettings):
    service_name: str = "vouchers"
    #: payments' charge events come one per charge (a bulk's acceptances up to 1,000 charges an event, as
    #: ``charge.accepted.v2``) and are folded a run at a time (``usage.py``): larger batches than the default make
    #: each cheaper (bench/README.md, ``charge_events.py``); a batch also ends at ``CONSUMER_BATCH_BYTES``
    consumer_prefetch: int = Field(default=1000, ge=1)
    consumer_batch_size: int = Field(default=500, ge=1)
    gc_young_threshold: int = Field(default=50_000, ge=0)  # fewer collections of a batch's short-lived objects
    #: what a run of decisions announces of the vouchers it issues (``ISSUED_EVENTS``): ``v2`` one ``VouchersIssued``
    #: (``voucher.issued.v2``) per funder of the run, in chunks of ``ISSUED_EVENT_VOUCHERS`` vouchers (a funder's single
    #: new voucher in a run stays a ``VoucherIssued``); ``v1`` one ``VoucherIssued`` per voucher (as before); ``both``
    #: each (the rollout: update payments and reporting first, then switch vouchers; README "Rolling updates"). A
    #: voucher issued over HTTP, or by a decision taken one at a time, is announced as ``VoucherIssued``.
    issued_events: Literal["v2", "v1", "both"] = "v2"
    #: at most this many vouchers in one ``voucher.issued.v2`` (about 600 bytes a voucher: 1,000 is ~600 kB of body,
    #: under the consumers' 4 MB batch limit and RabbitMQ's max_message_size; the contract allows 5,000)
    issued_event_vouchers: int = Field(default=1000, ge=1, le=5000)
    #: at most this many replies in one ``fi.seteli.decision.replies.v1`` (``DecisionReplies``: the replies of one run
    #: of decisions to a funder's case system that asked for batched replies; about 650 bytes a reply; the contract
    #: allows 5,000; more than ``CONSUMER_BATCH_SIZE`` makes no difference)
    decision_replies_per_message: int = Field(default=1000, ge=1, le=5000)
    #: the daily expiry job runs in the service at ``EXPIRY_DAILY_AT`` (UTC, HH:MM or HH:MM:SS), once across the
    #: service's instances (``seteli_shared.jobs``); ``EXPIRY_SCHEDULER``: on unless ENVIRONMENT=test, where it
    #: runs only when set to true
    expiry_scheduler: bool | None = None
    expiry_daily_at: str = Field(default="00:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")

    @property
    def schedules_expiry(self) -> bool:
        return self.expiry_scheduler if self.expiry_scheduler is not None else self.environment != "test"

    # --- the clients' light login: wrong codes slowed progressively per key (domain.login_wait) ---
    #: wrong codes for one voucher code from one address answered at once; then each further attempt from
    #: there waits ``LOGIN_FIRST_DELAY_SECONDS``, doubling with each further failure (429 + Retry-After)
    login_free_failures_per_voucher_address: int = Field(default=5, ge=1)
    #: the same for one address, whatever voucher codes it tries
    login_free_failures_per_address: int = Field(default=20, ge=1)
    #: wrong codes for one voucher code from all addresses together after which every address is slowed
    #: from its first wrong code for it (a distributed guess); never a refusal of the right code
    login_voucher_alarm_failures: int = Field(default=50, ge=1)
    login_first_delay_seconds: int = Field(default=2, ge=1)
    login_longest_delay_seconds: int = Field(default=15 * 60, ge=1)
    #: a key's failures are forgotten this long after its last one
    login_failure_memory_seconds: int = Field(default=24 * 3600, ge=60)
    #: addresses or CIDR networks whose ``X-Forwarded-For`` is believed (the portal, a reverse proxy);
    #: empty: none, every request is counted against its TCP peer (``seteli_shared.addresses``)
    trusted_proxies: str = ""
    #: lifetime of the token a light login gives
    client_token_ttl_seconds: int = Field(default=3600, ge=60, le=24 * 3600)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        TrustedProxies.parse(value)  # a typo stops the start, naming the entry
        return value

    @property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies)
