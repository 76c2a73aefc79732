"""Jobs inside a service: ``daily`` at a time of day (UTC), by the service's clock; ``every`` so many
seconds (housekeeping: purges, slow retries).

Every instance of a service may run its scheduler: the jobs are written to be safe when two run at
once (rows locked, each effect once)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

from .clock import Clock
from .logging import get_logger

log = get_logger(__name__)


def next_run_at(now: datetime, daily_at: str) -> datetime:
    """The next time of day ``daily_at`` (UTC, HH:MM) after ``now``."""
    hh, mm = (int(x) for x in daily_at.split(":"))
    at = now.astimezone(timezone.utc).replace(hour=hh, minute=mm, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


async def daily(name: str, daily_at: str, clock: Clock, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` every day at ``daily_at``; a failing run is logged and the next day's run goes on."""
    while True:
        wait = (next_run_at(clock.now(), daily_at) - clock.now()).total_seconds()
        await asyncio.sleep(max(wait, 1.0))
        try:
            result = await job()
            log.info("job.ran", job=name, result=str(result)[:200])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("job.failed", job=name, error=repr(exc)[:300])


async def every(name: str, interval_seconds: float, job: Callable[[], Awaitable[object]], *,
                quiet: bool = False) -> None:
    """Run ``job`` every ``interval_seconds`` (the first run one interval after the start; 0: never). A
    failing run is logged and the next goes on. ``quiet``: the run itself is logged at debug level only
    (the job logs what it did, so that an hourly job that found nothing to do adds no line)."""
    if interval_seconds <= 0:
        return
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            result = await job()
            (log.debug if quiet else log.info)("job.ran", job=name, result=str(result)[:200])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("job.failed", job=name, error=repr(exc)[:300])
