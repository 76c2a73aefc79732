from pydantic import Field

from seteli_shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    service_name: str = "registry"
    #: the daily check (lapsed insurance, the prepayment register: ``usecases.run_daily_check``, also
    #: ``POST /checks/daily``) runs by itself every day at ``DAILY_CHECK_AT`` (UTC, HH:MM or HH:MM:SS), once
    #: across the service's instances (``seteli_shared.jobs``). ``DAILY_CHECK_SCHEDULER``: on unless
    #: ENVIRONMENT=test, where it runs only when set to true
    daily_check_at: str = Field(default="02:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")
    daily_check_scheduler: bool | None = None

    @property
    def schedules_daily_check(self) -> bool:
        return self.daily_check_scheduler if self.daily_check_scheduler is not None else self.environment != "test"
