"""Settings from the environment (pydantic-settings), one class per service.

Every service reads the same base variables; a service subclasses it for its own.
Unsafe defaults are refused outside development: production needs a JWKS and never
accepts the development signing secret.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SIGNING_SECRET = "seteli-development-signing-secret-do-not-use-in-production"


class BrokerNames(BaseSettings):
    """The names on the broker that the services and ``seteli-broker`` must agree on, read by both from the
    same environment variables (``BUS_NAMESPACE``, ``BROKER_USER_PREFIX``): a user that ``seteli-broker
    add-funder-system`` makes is the one the vouchers service recognises as that funder's case system."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    #: prefix of every exchange and queue name; lets several systems (or test runs) share one broker
    bus_namespace: str = "seteli"
    #: prefix of the outside systems' broker users (``<prefix>funder-091``, ``<prefix>provider-<id>``) and the
    #: services' (``<prefix>svc-payments``): empty where the broker serves one system; a shared broker (several
    #: environments, test runs) gives each its own, e.g. ``test-``
    broker_user_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,40}$")


class ServiceSettings(BrokerNames):
    """Common settings. Environment variables are the upper-case field names."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    service_name: str = "service"
    environment: Literal["development", "test", "production"] = "development"
    #: ``postgresql+asyncpg://...`` or ``sqlite+aiosqlite:///path``; empty = embedded SQLite file
    database_url: str = ""
    data_dir: Path = Path("var")
    #: the broker; a cluster's nodes separated by commas, each a whole URL or ``host:port`` (the first one's
    #: credentials and virtual host): ``amqp://u:pw@rabbit-0:5672/,rabbit-1:5672,rabbit-2:5672``. The service
    #: connects to the first that answers and, when it loses that one, to the next (``bus.FailoverConnection``)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: while no broker address answers, the connection is tried again this often (seconds)
    amqp_reconnect_seconds: float = Field(default=2.0, gt=0)
    #: deliveries of one message before the broker dead-letters it
    delivery_limit: int = Field(default=5, ge=1)
    consumer_prefetch: int = Field(default=256, ge=1)
    consumer_batch_size: int = Field(default=128, ge=1)
    #: a consumer's batch also ends at this many bytes of message bodies (its first message is always taken)
    consumer_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    #: about the most bytes of message bodies a consumer holds delivered and not yet settled
    #: (``CONSUMER_HELD_BYTES``): its prefetch is this over the largest recent body, at most ``consumer_prefetch``
    #: (so a backlog of ``charge.accepted.v2`` and ``charge.settled.v2`` stays inside the container's memory)
    consumer_held_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    #: after a batch's first message a consumer waits up to this long (seconds) for more to join it
    #: (``CONSUMER_BATCH_WAIT_SECONDS``; 0: only what has already arrived): a trickle of events (one a charge at a
    #: few hundred charges a second) is then folded tens at a time, each batch's fixed cost (inbox claim,
    #: transaction, pool check) shared, for this much more delay before a read model shows an event
    consumer_batch_wait_seconds: float = Field(default=0.05, ge=0)
    publish_timeout_seconds: float = 10.0
    relay_batch_size: int = Field(default=500, ge=1)
    #: how often a relay with nothing to do looks at the outbox anyway (``RELAY_IDLE_SECONDS``): an in-process relay
    #: is woken by each commit of its own service, so this is for rows written elsewhere and retries; each look is a
    #: transaction (at 0.2 s, about 15-20 ms of an idle service's CPU a second on the 2-core machine)
    relay_idle_seconds: float = 1.0
    #: a relay woken by a commit, or one that has just published fewer rows than ``RELAY_BATCH_SIZE``, waits this
    #: long (seconds) before its next look (``RELAY_LINGER_SECONDS``; 0: at once), so that the commits of single
    #: charges are published tens at a time (one claim, one write to the socket, one mark) rather than one by one
    relay_linger_seconds: float = Field(default=0.02, ge=0)
    #: the service's hook that lets its relay publish several outbox rows of a batch as one message
    #: (``RELAY_COALESCE``, ``module:factory``, ``outbox.load_coalescer``; empty: a message a row), made with
    #: ``RELAY_COALESCE_OPTIONS`` (a JSON object; payments fills it from its own settings)
    relay_coalesce: str = ""
    relay_coalesce_options: dict[str, Any] = Field(default_factory=dict)
    #: messages to outside systems' own queues on these exchanges of the namespace (``OUTBOX_PARK_EXCHANGES``,
    #: a JSON list; payments: ``["notices"]``) that the broker returns unroutable (nobody has bound a queue for
    #: them yet) ``OUTBOX_PARK_AFTER_ATTEMPTS`` times are parked: kept in the outbox, logged once, not tried
    #: again until ``outbox.retry_parked`` (the service's operator action or its slow periodic retry)
    outbox_park_exchanges: tuple[str, ...] = ()
    outbox_park_after_attempts: int = Field(default=8, ge=1)
    #: where the outbox relay runs (``RELAY``): ``in_process`` in the service's own event loop (woken by each
    #: commit that writes the outbox); ``process``: the service starts it as a child process of its own
    #: (``python -m seteli_shared.relay``, woken through a pipe, ended with the service), so that publishing
    #: does not take the HTTP worker's time (bulk intake); ``off``: none here, run ``seteli-<service> relay``
    #: beside the service (it polls every ``RELAY_IDLE_SECONDS``)
    relay: Literal["in_process", "process", "off"] = "in_process"
    #: test each pooled PostgreSQL connection with a round trip before use (``DB_POOL_PRE_PING``); a
    #: service whose use cases retry on a dropped connection may turn it off (connections are recycled
    #: after ``DB_POOL_RECYCLE_SECONDS`` either way)
    db_pool_pre_ping: bool = True
    #: pooled PostgreSQL connections kept open (``DB_POOL_SIZE``) and opened beyond them under load
    #: (``DB_MAX_OVERFLOW``; closed again when returned, so a pool smaller than the concurrent requests
    #: plus the relay and consumers opens and closes a connection per request)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_recycle_seconds: int = 1800
    #: on PostgreSQL, look this often for tables changed enough since their last analysis and ``ANALYZE`` them
    #: (``statistics.TableStatistics``: plans that do not depend on autovacuum); 0 turns it off
    db_analyse_seconds: float = Field(default=30.0, ge=0)
    #: a database that is down or stalled must not hold a request for long: a new connection gets
    #: ``DB_CONNECT_TIMEOUT_SECONDS``, each statement ``DB_STATEMENT_TIMEOUT_SECONDS`` (the driver gives up
    #: and has the server cancel it), a free pooled connection is waited for ``DB_POOL_TIMEOUT_SECONDS``;
    #: then the request is answered 503 ``database_unavailable`` with ``Retry-After: RETRY_AFTER_SECONDS``
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_after_seconds: int = Field(default=5, ge=1)
    #: ``/health/ready`` waits this long for the database's answer and the broker's publisher confirm
    health_check_timeout_seconds: float = Field(default=2.0, gt=0)
    #: scheduled jobs (``seteli_shared.jobs``): the instance holding a job's lease renews it every third of
    #: ``JOB_LEASE_SECONDS``; when it dies another instance takes the job over once the lease has run out
    #: (within ``JOB_LEASE_SECONDS`` and a third of it). Each job's own schedule is its service's setting
    #: (``SETTLEMENT_DAILY_AT``, ``DAILY_CHECK_AT``, ``EXPIRY_DAILY_AT``, ``IDEMPOTENCY_PURGE_INTERVAL_SECONDS``, ...)
    job_lease_seconds: float = Field(default=15.0, ge=0.3)
    #: allocations between two collections of the garbage collector's youngest generation (``GC_YOUNG_THRESHOLD``;
    #: 0: Python's own, 700). A consumer folding thousands of events a second allocates a great many short-lived
    #: objects: collecting them 70 times less often took 5-28 % off reporting's fold in process; through the bus
    #: one pair of runs showed 10-17 % less CPU an event, another none (bench/README.md)
    gc_young_threshold: int = Field(default=0, ge=0)
    log_level: str = "INFO"
    log_json: bool = True
    migrate_on_start: bool = True
    #: largest request body (413 above it); bulk endpoints (``ServiceSpec.bulk_paths``) have their own
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_bulk_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    # --- identity (OAuth2 bearer JWTs) ---
    jwt_issuer: str = "seteli-dev"
    jwt_audience: str = "seteli"
    #: JWKS document URL or file path (production keys, asymmetric)
    jwks_url: str = ""
    #: HS256 secret accepted only in development/test
    dev_signing_secret: str = DEV_SIGNING_SECRET
    #: private key (PEM) with which a service signs the tokens it issues itself (clients' light
    #: login); its public key must be in the JWKS the services trust. Development signs with the secret.
    token_signing_key: str = ""
    token_signing_kid: str = ""

    @model_validator(mode="after")
    def _defaults(self) -> "ServiceSettings":
        if not self.database_url:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / (self.service_name + '.db')}"
        if self.environment == "production":
            if self.dev_signing_secret == DEV_SIGNING_SECRET:
                # the development secret is simply not used in production
                self.dev_signing_secret = ""
            if not self.jwks_url:
                raise ValueError("JWKS_URL must be set when ENVIRONMENT=production")
        return self

    @property
    def is_development(self) -> bool:
        return self.environment in ("development", "test")

    @property
    def exchange_name(self) -> str:
        return f"{self.bus_namespace}.events"

    @property
    def queue_name(self) -> str:
        return f"{self.bus_namespace}.{self.service_name}"

