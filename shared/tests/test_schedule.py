"""The job runner outside a service (no lease): when the next run is, and that a failing run does not stop the
next one. Under a lease, across instances: ``test_jobs.py``."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from seteli_shared import schedule
from seteli_shared.clock import FixedClock


def test_the_next_run_is_today_if_the_time_is_still_ahead_else_tomorrow():
    now = datetime(2026, 11, 25, 0, 10, tzinfo=timezone.utc)
    assert schedule.next_run_at(now, "00:15") == datetime(2026, 11, 25, 0, 15, tzinfo=timezone.utc)
    assert schedule.next_run_at(now, "00:10") == datetime(2026, 11, 26, 0, 10, tzinfo=timezone.utc)
    assert schedule.next_run_at(datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc), "03:00") == datetime(
        2027, 1, 1, 3, 0, tzinfo=timezone.utc), "every day of the year"


async def test_a_failing_run_is_logged_and_the_next_day_runs(monkeypatch):  # noqa: ANN001
    clock = FixedClock(datetime(2026, 11, 25, 3, 0, 0, tzinfo=timezone.utc))
    runs: list[int] = []

    async def no_wait(seconds: float) -> None:  # each "day" passes at once
        clock.advance(days=1)
        await original_sleep(0)

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the database was away")
        if len(runs) == 3:
            raise asyncio.CancelledError

    original_sleep = asyncio.sleep
    monkeypatch.setattr(schedule.asyncio, "sleep", no_wait)
    try:
        await schedule.daily("test", "03:00", clock, job)
    except asyncio.CancelledError:
        pass
    assert runs == [0, 1, 2]


async def test_every_runs_the_job_each_interval_and_goes_on_after_a_failure(monkeypatch):  # noqa: ANN001
    waits: list[float] = []
    runs: list[int] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await original_sleep(0)

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the database was away")
        if len(runs) == 3:
            raise asyncio.CancelledError

    original_sleep = asyncio.sleep
    monkeypatch.setattr(schedule.asyncio, "sleep", no_wait)
    try:
        await schedule.every("test", 3600, job)
    except asyncio.CancelledError:
        pass
    assert runs == [0, 1, 2]
    assert all(0 < w <= 3600 for w in waits), "each run at the next multiple of the interval, within one interval"
    await schedule.every("off", 0, job)  # an interval of 0: never
    assert runs == [0, 1, 2]
