"""Jobs inside a service: ``daily`` at a time of day (UTC), by the service's clock; ``every`` so many
seconds (housekeeping: purges, slow retries).

Inside a running service (its ``Runtime`` sets ``jobs.current_runner``) each job runs under its lease in
the service's database (``jobs.JobRunner``): however many instances of the service run, each due time
is run once, by the instance holding the job's lease, and another instance takes the job over within
``JOB_LEASE_SECONDS`` when that one dies. Every run logs its start (``job.started``) and one line for its end
(``job.ran`` or ``job.failed``: due time, result, duration) and is recorded for ``GET /health/jobs``. Outside a service (a script, a unit
test) the job simply runs in this process at each due time."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from .clock import SYSTEM_CLOCK, Clock
from .jobs import Daily, Every, Schedule, current_runner
from .logging import get_logger

log = get_logger(__name__)


def next_run_at(now: datetime, daily_at: str) -> datetime:
    """The next time of day ``daily_at`` (UTC, HH:MM or HH:MM:SS) after ``now``."""
    at = Daily(daily_at).latest_due(now)
    return at if at > now else at + timedelta(days=1)


async def daily(name: str, daily_at: str, clock: Clock, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` every day at ``daily_at``; a failing run is logged and the next day's run goes on."""
    await _scheduled(name, Daily(daily_at), clock, job)


async def every(name: str, interval_seconds: float, job: Callable[[], Awaitable[object]], *,
                quiet: bool = False) -> None:
    """Run ``job`` every ``interval_seconds`` (at the multiples of the interval since the epoch, so the first
    run comes within one interval of the start; 0: never). A failing run is logged and the next goes on.
    ``quiet`` is accepted for the callers that passed it before: since issue 21 every run logs its one line,
    so that each run of each job can be followed (start, result, duration)."""
    if interval_seconds <= 0:
        return
    del quiet
    await _scheduled(name, Every(interval_seconds), SYSTEM_CLOCK, job)


async def _scheduled(name: str, schedule: Schedule, clock: Clock, job: Callable[[], Awaitable[object]]) -> None:
    runner = current_runner.get()
    if runner is not None:
        await runner.run(name, schedule, job, clock)
    else:
        await _in_this_process(name, schedule, clock, job)


async def _in_this_process(name: str, schedule: Schedule, clock: Clock,
                           job: Callable[[], Awaitable[object]]) -> None:
    """Without a service's runner: each due time in this process, no lease."""
    while True:
        now = clock.now()
        await asyncio.sleep(max((schedule.next_due(now) - now).total_seconds(), 1.0))
        started = time.monotonic()
        log.info("job.started", job=name)
        try:
            result = await job()
            log.info("job.ran", job=name, result=str(result)[:200],
                     duration_ms=round((time.monotonic() - started) * 1000))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("job.failed", job=name, error=repr(exc)[:300],
                      duration_ms=round((time.monotonic() - started) * 1000))

