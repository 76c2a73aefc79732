"""Scheduled jobs under a lease (``seteli_shared.jobs``), several runners on one real database standing for
several instances of a service: each due time is run once, by the lease's holder; a holder that stops renewing
is replaced within the lease's bound and a run it left unfinished is run again; an orderly stop hands the job on
at once. (A holder killed with ``kill -9`` in a process of its own: ``tests/test_instances.py``.)"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from seteli_shared import schedule
from seteli_shared.db import make_engine
from seteli_shared.jobs import FAILED, OK, Daily, Every, JobRunner, ScheduledJob, current_runner, summary
from seteli_shared.testing import eventually

T = ScheduledJob.__table__
LEASE = 0.9


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request, pg, tmp_path):  # noqa: ANN001
    url = await pg.create("jobs") if request.param == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: T.create(c))
    yield engine
    await engine.dispose()


class Ledger:
    """What the runs of a job did: (instance, due time claimed) per run."""

    def __init__(self):
        self.runs: list[tuple[str, datetime]] = []

    def runner(self, instance: str, engine, lease: float = LEASE) -> JobRunner:  # noqa: ANN001
        ledger = self

        class Recording(JobRunner):
            async def _run_once(self, name, schedule_, job, due, taken_over) -> None:  # noqa: ANN001
                ledger.runs.append((self.instance, due))
                await super()._run_once(name, schedule_, job, due, taken_over)

        return Recording(engine, lease, instance=instance)

    @staticmethod
    def job(seconds: float = 0.0):  # noqa: ANN205
        async def run() -> int:
            if seconds:
                await asyncio.sleep(seconds)
            return 1
        return run


async def _row(engine) -> dict:  # noqa: ANN001
    async with engine.connect() as conn:
        return dict((await conn.execute(sa.select(T))).mappings().one())


def _start(runner: JobRunner, name: str, schedule_: Every, job) -> asyncio.Task:  # noqa: ANN001
    return asyncio.create_task(runner.run(name, schedule_, job))


async def _die(task: asyncio.Task, runner: JobRunner) -> None:
    """The instance stops without a word: its task ends and its lease is neither renewed nor given up."""
    async def nothing(_name: str) -> None:
        return None

    runner._release = nothing  # type: ignore[method-assign]  (a dead process releases nothing)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_three_instances_run_each_due_time_once_and_only_the_holder_runs(engine):  # noqa: ANN001
    ledger = Ledger()
    runners = [ledger.runner(f"i{n}", engine) for n in range(3)]
    tasks = [_start(r, "tick", Every(0.25), ledger.job()) for r in runners]
    try:
        await asyncio.sleep(2.6)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    dues = [d for _, d in ledger.runs]
    assert len(dues) >= 6, ledger.runs
    assert len(set(dues)) == len(dues), f"a due time ran twice: {ledger.runs}"
    assert len({i for i, _ in ledger.runs}) == 1, "only the lease's holder runs the job while it lives"


async def test_a_holder_that_dies_is_replaced_within_the_lease_and_its_unfinished_run_runs_again(
        engine):  # noqa: ANN001
    ledger = Ledger()
    first, second = ledger.runner("first", engine), ledger.runner("second", engine)
    task1 = _start(first, "slow", Every(0.5), ledger.job(seconds=30))  # a run that never ends
    await eventually(lambda: ledger.runs, timeout=5)
    task2 = _start(second, "slow", Every(0.5), ledger.job())
    died_due = (await _row(engine))["due_at"]
    await _die(task1, first)
    died_at = time.monotonic()
    try:
        await eventually(lambda: any(i == "second" for i, _ in ledger.runs), timeout=10)
        took = time.monotonic() - died_at
        assert took <= LEASE + LEASE / 3 + 0.5, f"taken over after {took:.2f} s"
        row = await _row(engine)
        again = [r for r in ledger.runs if r[0] == "second"]
        assert row["holder"] == "second"
        # the dead holder's run of its due time runs again, once (or a later due time, which covers it)
        assert (await _row(engine))["due_at"] >= died_due
        await eventually(lambda: len([r for r in ledger.runs if r[0] == "second"]) >= 3, timeout=5)
        dues = [d for i, d in ledger.runs if i == "second"]
        assert len(set(dues)) == len(dues), f"the new holder ran a due time twice: {again}"
    finally:
        task2.cancel()
        await asyncio.gather(task2, return_exceptions=True)


async def test_an_orderly_stop_hands_the_job_on_at_once(engine):  # noqa: ANN001
    first, second = JobRunner(engine, 30.0, instance="first"), JobRunner(engine, 30.0, instance="second")
    task1 = _start(first, "handover", Every(3600), Ledger.job())
    task2 = None
    try:
        await eventually(lambda: _holder_is(engine, "first"), timeout=5)
        task2 = _start(second, "handover", Every(3600), Ledger.job())
        task1.cancel()
        await asyncio.gather(task1, return_exceptions=True)
        # with a lease of 30 s, only the release lets the other take it within its next look (10 s)
        await eventually(lambda: _holder_is(engine, "second"), timeout=12)
    finally:
        for task in (task1, task2):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def _holder_is(engine, who: str) -> bool:  # noqa: ANN001
    try:
        row = await _row(engine)
    except sa.exc.NoResultFound:
        return False
    return row["holder"] == who and row["lease_until"] is not None


async def test_due_times_missed_while_nobody_held_the_job_are_caught_up_with_one_run(engine):  # noqa: ANN001
    ledger = Ledger()
    runner = ledger.runner("late", engine)
    every = Every(2.0)
    last = every.latest_due(datetime.now(timezone.utc)) - 5 * timedelta(seconds=2.0)
    async with engine.begin() as conn:  # the job last ran five due times ago
        await conn.execute(T.insert().values(name="catch-up", schedule=str(every), outcome=OK, due_at=last,
                                             started_at=last))
    task = _start(runner, "catch-up", every, ledger.job())
    try:
        await eventually(lambda: ledger.runs, timeout=3)
        await asyncio.sleep(0.3)
        first = ledger.runs[0][1]
        # a later run (the machine may be slow enough for the next due time to come) is for a due time of its own
        assert all(due >= first + timedelta(seconds=1.9) for _, due in ledger.runs[1:]), \
            "one run catches up every missed due time"
        assert ledger.runs[0][1] >= last + 4 * timedelta(seconds=2.0), "the latest of them"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_job_waits_for_its_next_due_time_and_each_run_is_recorded(engine):  # noqa: ANN001
    runner = JobRunner(engine, LEASE, instance="only")
    calls: list[int] = []

    async def fails_once() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the bank's file server was away")
        return ["a", "b"]

    task = asyncio.create_task(runner.run("record", Every(0.5), fails_once))
    try:
        await eventually(lambda: len(calls) >= 1, timeout=3)
        await eventually(lambda: _outcome_is(engine, FAILED), timeout=3)
        row = await _row(engine)
        assert row["detail"] == "RuntimeError", "the error's type, never its text"
        await eventually(lambda: _outcome_is(engine, OK), timeout=3)
        row = await _row(engine)
        assert row["detail"] == "2 items" and row["duration_ms"] is not None and row["finished_at"] >= row["started_at"]
        status = await runner.status()
        assert status[0]["held_here"] and status[0]["last_run"]["outcome"] == OK
        assert status[0]["next_due_at"] > status[0]["last_run"]["due_at"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _outcome_is(engine, outcome: str) -> bool:  # noqa: ANN001
    try:
        return (await _row(engine))["outcome"] == outcome
    except sa.exc.NoResultFound:
        return False


async def test_schedule_runs_under_the_services_runner_and_a_first_daily_run_waits_for_its_time(engine):  # noqa: ANN001
    """``schedule.daily`` inside a service: the row is made with today's due time as done (a new deployment
    does not settle at once); ``every`` outside a service runs in the process, unleased."""
    runner = JobRunner(engine, LEASE, instance="svc")
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    token = current_runner.set(runner)
    try:
        past = (datetime.now(timezone.utc).replace(microsecond=0)).strftime("%H:%M:%S")
        task = asyncio.create_task(schedule.daily("daily-job", past, schedule.SYSTEM_CLOCK, job))
    finally:
        current_runner.reset(token)
    try:
        await eventually(lambda: _holder_is(engine, "svc"), timeout=3)
        await asyncio.sleep(0.5)
        assert ran == [], "the due time passed before the job existed is not owed"
        assert (await _row(engine))["schedule"] == f"daily {past} UTC"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_due_times_are_the_same_instants_for_every_instance():
    now = datetime(2026, 11, 25, 3, 0, 0, tzinfo=timezone.utc)
    assert Daily("03:00").latest_due(now) == now, "a due time at the very instant is due"
    assert Daily("03:00:30").latest_due(now) == datetime(2026, 11, 24, 3, 0, 30, tzinfo=timezone.utc)
    assert Daily("03:00").next_due(now) == datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
    later = datetime(2026, 11, 25, 3, 59, 59, tzinfo=timezone.utc)
    assert Every(3600).latest_due(later) == now and Every(3600).next_due(later) == datetime(
        2026, 11, 25, 4, 0, tzinfo=timezone.utc)


def test_health_shows_counts_never_data():
    assert summary(3) == "3" and summary(["v1", "v2"]) == "2 items" and summary({"queue": 1, "webhook": 0}) == \
        "queue: 1, webhook: 0"
    assert summary({"provider_id": "p-1"}) is None and summary(object()) is None and summary(None) is None
