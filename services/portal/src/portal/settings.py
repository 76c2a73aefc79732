"""The portal's settings, from the environment (upper-case field names).

The portal consumes no events: it knows the four services only by their base URLs (defaults: the
manifest's ports on this machine) and calls their public HTTP APIs with the signed-in user's own
token. Its one database holds the sign-in sessions (``sessions.py``): a SQLite file under DATA_DIR by
default, PostgreSQL through DATABASE_URL wherever several portal instances share one address.
Production refuses unsafe defaults: a session secret must be set, the development sign-in is off, and
tokens are verified against the JWKS the services trust."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from seteli_shared.addresses import TrustedProxies
from seteli_shared.manifest import BY_NAME
from seteli_shared.settings import DEV_SIGNING_SECRET, ServiceSettings

DEV_SESSION_SECRET = "seteli-portal-development-session-secret-do-not-use-in-production"


def _local(name: str) -> str:
    return f"http://127.0.0.1:{BY_NAME[name].port}"


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    registry_url: str = _local("registry")
    vouchers_url: str = _local("vouchers")
    payments_url: str = _local("payments")
    reporting_url: str = _local("reporting")
    #: the portal's own public address (the OpenID Connect redirect URI is built from it)
    portal_url: str = f"http://127.0.0.1:{BY_NAME['portal'].port}"
    #: the session store: ``postgresql+asyncpg://...`` or ``sqlite+aiosqlite:///path``; empty: a SQLite
    #: file ``portal.db`` under ``DATA_DIR``. Several portal instances must share one (PostgreSQL).
    database_url: str = ""
    data_dir: Path = Path("var")
    migrate_on_start: bool = True
    #: the key the sessions' data (the user's token among it) is encrypted under at rest, together with
    #: each session's own id (``PORTAL_SESSION_SECRET``); required outside development
    portal_session_secret: str = DEV_SESSION_SECRET
    #: a session's absolute lifetime from sign-in, in seconds (the token inside may expire earlier)
    session_max_age: int = Field(default=8 * 3600, ge=60)
    #: a session ends after this many seconds without a request (``SESSION_IDLE_SECONDS``)
    session_idle_seconds: int = Field(default=30 * 60, ge=60)
    #: a signed-in session's id is replaced by a new one this often (``SESSION_ROTATE_SECONDS``)
    session_rotate_seconds: int = Field(default=15 * 60, ge=10)
    #: expired sessions are deleted this often by each portal instance (and whenever one is met)
    session_purge_seconds: int = Field(default=5 * 60, ge=1)
    #: cookies only over HTTPS (on by default in production)
    secure_cookies: bool | None = None
    #: addresses or CIDR networks of the reverse proxies in front of the portal, whose
    #: ``X-Forwarded-For`` names the browser (``seteli_shared.addresses``); empty: none
    trusted_proxies: str = ""
    #: the funder the public comparison opens with
    default_funder: str = "091"
    request_timeout_seconds: float = 15.0
    log_level: str = "INFO"
    log_json: bool = True

    # --- the operator's view of dead-lettered messages: counted on the broker (read only, nothing consumed)
    #: empty: the page says the broker is not configured for the portal
    amqp_url: str = ""
    bus_namespace: str = "seteli"
    #: the dead-letter queues to count, after the namespace
    dead_letter_queues: str = ",".join([*(f"{n}.dlq" for n in ("registry", "vouchers", "payments", "reporting")),
                                        "vouchers.decisions.dlq"])

    # --- identity: the same as the services' (seteli_shared.settings.ServiceSettings)
    jwt_issuer: str = "seteli-dev"
    jwt_audience: str = "seteli"
    jwks_url: str = ""
    dev_signing_secret: str = DEV_SIGNING_SECRET
    # --- OpenID Connect sign-in for staff and providers (production)
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid"

    @model_validator(mode="after")
    def _safe(self) -> "PortalSettings":
        if self.environment == "production":
            if self.portal_session_secret == DEV_SESSION_SECRET or len(self.portal_session_secret) < 32:
                raise ValueError("PORTAL_SESSION_SECRET (32 characters or more) must be set when ENVIRONMENT=production")
            if not self.jwks_url:
                raise ValueError("JWKS_URL must be set when ENVIRONMENT=production")
            if self.dev_signing_secret == DEV_SIGNING_SECRET:
                self.dev_signing_secret = ""
        if self.secure_cookies is None:
            self.secure_cookies = self.environment == "production"
        for name in ("registry_url", "vouchers_url", "payments_url", "reporting_url", "portal_url", "oidc_issuer"):
            setattr(self, name, getattr(self, name).rstrip("/"))
        TrustedProxies.parse(self.trusted_proxies)  # a typo stops the start, naming the entry
        if not self.database_url:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'portal.db'}"
        return self

    @property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies)

    @property
    def dev_sign_in(self) -> bool:
        """The development sign-in page (pick a role, get a development token): never in production."""
        return self.environment in ("development", "test") and bool(self.dev_signing_secret)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    def service_url(self, service: str) -> str:
        return getattr(self, f"{service}_url")

    def token_settings(self) -> ServiceSettings:
        """Settings for ``seteli_shared.auth.TokenVerifier``: the portal trusts what the services trust."""
        return ServiceSettings(service_name="portal", environment=self.environment, database_url="unused://",
                               jwt_issuer=self.jwt_issuer, jwt_audience=self.jwt_audience, jwks_url=self.jwks_url,
                               dev_signing_secret=self.dev_signing_secret or "unused")
