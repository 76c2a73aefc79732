"""Time, passed in: use cases take a ``Clock`` instead of calling ``date.today()`` themselves, so
that rules about dates (validity, deadlines, windows) are tested at any moment."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Protocol

from fastapi import Depends, Request


class Clock(Protocol):
    def now(self) -> datetime: ...  # aware, UTC

    def today(self) -> date: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def today(self) -> date:
        return self.now().date()


@dataclass
class FixedClock:
    """A clock for tests: stands still until moved."""

    at: datetime

    def now(self) -> datetime:
        return self.at

    def today(self) -> date:
        return self.at.date()

    def advance(self, **delta: float) -> None:
        self.at = self.at + timedelta(**delta)


#: a system clock for the modules that have not been given one yet (vouchers' decisions consumer, the portal's
#: session store): payments' use cases take theirs from the app (``app.state.clock``) or the command line
SYSTEM_CLOCK = SystemClock()


async def get_clock(request: Request) -> Clock:
    """The app's clock (``app.state.clock``, which ``create_service_app`` sets: a system clock unless a test
    set another). Async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request
    for a lookup."""
    return request.app.state.clock


ClockDep = Annotated[Clock, Depends(get_clock)]
