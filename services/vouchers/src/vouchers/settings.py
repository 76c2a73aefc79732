from pydantic import Field

from seteli_shared.settings import ServiceSettings


class VouchersSettings(ServiceSettings):
    service_name: str = "vouchers"
    #: the daily expiry job in the service (``EXPIRY_SCHEDULER``, at ``EXPIRY_DAILY_AT`` UTC; off in tests)
    expiry_scheduler: bool = True
    expiry_daily_at: str = Field(default="00:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    # --- the clients' light login: failed attempts within the window, then 429 until it passes ---
    #: failed light logins of one voucher before it is refused (``LOGIN_FAILURES_PER_VOUCHER``)
    login_failures_per_voucher: int = Field(default=5, ge=1)
    #: failed light logins from one source address, whatever vouchers they tried
    login_failures_per_source: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    #: lifetime of the token a light login gives
    client_token_ttl_seconds: int = Field(default=3600, ge=60, le=24 * 3600)

    # --- decisions from funders' case systems on the bus ---
    #: prefix of the funders' case-system broker users (``<prefix>funder-<funder_id>``); empty in production
    funder_user_prefix: str = ""
