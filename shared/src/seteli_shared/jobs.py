"""Scheduled jobs under a lease in the service's own database, so that each due run happens once however
many instances of the service run (``schedule.daily`` and ``schedule.every`` run their job through the
``JobRunner`` of the service they run in).

One row per job (``scheduled_job``) holds its lease and its latest run:

- **the lease**: ``holder`` (an instance: host, process id and a random part) and ``lease_until``. The holder
  renews it every third of ``JOB_LEASE_SECONDS`` (also while a run goes on); another instance takes it once
  it has expired, so a holder that dies (even ``kill -9``) is replaced within ``JOB_LEASE_SECONDS`` plus a
  third of it. An instance that stops in an orderly way gives its leases up at once (a rolling update hands
  the jobs over without a gap). Lease times are the database's clock (PostgreSQL's ``clock_timestamp()``),
  so instances whose clocks differ still agree on who holds a lease.
- **the due time**: each job's due times are fixed instants (a time of day; multiples of an interval since
  the epoch), the same for every instance. Only the holder starts a run, and only for a due time later
  than the row's ``due_at`` (claimed in the same statement that checks the lease), so a due time is run
  once. A run whose holder died before it finished (``outcome = running`` with an expired lease) is run
  again by the instance that takes the lease over; due times that passed while nobody held the lease
  are caught up with one run (every job here does all that is due when it runs: settles every unpaid
  charge, suspends every lapsed insurance, expires every passed voucher).
- **the latest run**: its due time, start, end, duration, outcome (``ok`` / ``failed`` / ``running``) and
  a short detail (a count, or the error's type), read by ``GET /health/jobs`` on any instance.

A holder cut off from the database (a network partition) may still finish a run after another instance has
taken the lease over; the jobs are written to be safe when two run at once (rows locked, each effect
once), and such a late run's outcome is not recorded over the new holder's (``job.lease_lost``).

SQLite (the embedded default) works the same way, with the instances' own clock.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from .clock import SYSTEM_CLOCK, Clock
from .ids import new_id
from .logging import get_logger
from .messaging import UTCDateTime
from .metrics import metrics

log = get_logger(__name__)

RUNNING, OK, FAILED = "running", "ok", "failed"
#: the detail of a run started again by another instance (its holder died before it finished)
TAKEN_OVER = "taken over"


class ScheduledJob(SQLModel, table=True):
    """One scheduled job of the service: who holds its lease until when, and its latest run."""

    __tablename__ = "scheduled_job"
    name: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    #: how it is scheduled, as its holder last said (``daily 03:00 UTC``, ``every 3600 s``)
    schedule: str = Field(sa_column=sa.Column(sa.String(60), nullable=False))
    holder: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    lease_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    #: the due time of the latest run started (on creation: the latest due time then, which is not owed)
    due_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    started_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    #: running | ok | failed (None: never run)
    outcome: str | None = Field(default=None, sa_column=sa.Column(sa.String(20)))
    #: a count the run returned, or the type of the error it failed with (never data)
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    duration_ms: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))


T = ScheduledJob.__table__


def create_jobs_table(op) -> None:  # noqa: ANN001
    """The shared migration's table (``seteli_shared/migrations``)."""
    op.create_table(
        "scheduled_job",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("schedule", sa.String(60), nullable=False),
        sa.Column("holder", sa.String(200)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(20)),
        sa.Column("detail", sa.String(200)),
        sa.Column("duration_ms", sa.Integer),
    )


# ------------------------------------------------------------------ when a job is due
@dataclass(frozen=True)
class Daily:
    """Every day at a time of day (UTC, ``HH:MM`` or ``HH:MM:SS``)."""

    at: str

    def _time(self) -> tuple[int, int, int]:
        parts = [int(x) for x in self.at.split(":")]
        return parts[0], parts[1], parts[2] if len(parts) > 2 else 0

    def latest_due(self, now: datetime) -> datetime:
        """The latest due time at or before ``now``."""
        hh, mm, ss = self._time()
        at = now.astimezone(timezone.utc).replace(hour=hh, minute=mm, second=ss, microsecond=0)
        return at if at <= now else at - timedelta(days=1)

    def next_due(self, now: datetime) -> datetime:
        """The first due time after ``now``."""
        return self.latest_due(now) + timedelta(days=1)

    def __str__(self) -> str:
        return f"daily {self.at} UTC"


@dataclass(frozen=True)
class Every:
    """Every so many seconds, at the multiples of the interval since the epoch (the same instants for
    every instance, whenever each started)."""

    seconds: float

    def latest_due(self, now: datetime) -> datetime:
        epoch = now.timestamp()
        return datetime.fromtimestamp(epoch - epoch % self.seconds, timezone.utc)

    def next_due(self, now: datetime) -> datetime:
        return self.latest_due(now) + timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"every {self.seconds:g} s"


Schedule = Daily | Every


def summary(result: object) -> str | None:
    """What ``/health/jobs`` may show of a run's result: a count (a number, the length of a list, a mapping of
    counts), never the data itself (ids, amounts)."""
    if isinstance(result, bool) or result is None:
        return None
    if isinstance(result, int):
        return str(result)
    if isinstance(result, (list, tuple, set)):
        return f"{len(result)} items"
    if isinstance(result, Mapping) and all(isinstance(v, int) and not isinstance(v, bool) for v in result.values()):
        return ", ".join(f"{k}: {v}" for k, v in result.items())[:200]
    return None


def instance_name() -> str:
    """This process among the service's instances: its host, process id and a random part (a process id
    may come back after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


#: the runner of the service whose lifespan is running (``Runtime.start`` sets it; ``schedule`` reads it)
current_runner: ContextVar["JobRunner | None"] = ContextVar("current_job_runner", default=None)


# ------------------------------------------------------------------ the runner
class JobRunner:
    """The scheduled jobs of one service instance, each under its lease (see the module's docstring)."""

    def __init__(self, engine: AsyncEngine, lease_seconds: float = 15.0, instance: str | None = None):
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.instance = instance or instance_name()
        self.postgres = engine.dialect.name == "postgresql"
        #: job name -> its schedule and the clock its due times are read from (the jobs this instance runs)
        self.schedules: dict[str, tuple[Schedule, Clock]] = {}
        self._insert = (postgresql.insert(T) if self.postgres else sqlite.insert(T)).on_conflict_do_nothing()

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 3

    async def _now(self, conn: AsyncConnection) -> datetime:
        """The lease clock: the database's on PostgreSQL (instances' clocks may differ), else this machine's."""
        if self.postgres:
            return (await conn.execute(sa.text("SELECT clock_timestamp()"))).scalar_one()
        return datetime.now(timezone.utc)

    async def _register(self, name: str, schedule: Schedule, clock: Clock) -> None:
        """The job's row, created once: the due time it is created at counts as done (a new deployment does
        not run a daily job at once), so its first run is its next due time."""
        async with self.engine.begin() as conn:
            await conn.execute(self._insert.values(name=name, schedule=str(schedule),
                                                   due_at=schedule.latest_due(clock.now())))

    def _leasable(self, now: datetime):  # noqa: ANN202
        """The job's lease is this instance's, free, or expired."""
        return sa.or_(T.c.holder == self.instance, T.c.holder.is_(None), T.c.lease_until.is_(None),
                      T.c.lease_until < now)

    async def _hold(self, name: str, schedule: Schedule) -> tuple[bool, str | None]:
        """Renew this instance's lease on the job, or take it when it is free or expired (one conditional
        statement: two instances never both take it). Returns (held now, the previous holder when it was
        taken from another instance)."""
        async with self.engine.begin() as conn:
            now = await self._now(conn)
            before = (await conn.execute(sa.select(T.c.holder).where(T.c.name == name).with_for_update())).scalar()
            taken = await conn.execute(T.update().where(T.c.name == name, self._leasable(now)).values(
                holder=self.instance, lease_until=now + timedelta(seconds=self.lease_seconds), schedule=str(schedule)))
        if not taken.rowcount:
            return False, None
        return True, (before if before not in (None, self.instance) else None)

    async def _claim(self, name: str, due: datetime) -> tuple[datetime, bool] | None:
        """Start the run of ``due`` if this instance holds the lease and the due time is later than the
        latest run's, or the latest run was left unfinished (its holder died: this instance has taken the
        lease over). Returns (the due time claimed, whether it is an unfinished run taken over) or None."""
        unfinished = T.c.outcome == RUNNING
        async with self.engine.begin() as conn:
            now = await self._now(conn)
            claimed = (await conn.execute(
                T.update().where(T.c.name == name, T.c.holder == self.instance, T.c.lease_until >= now,
                                 sa.or_(T.c.due_at.is_(None), T.c.due_at < due, unfinished))
                .values(due_at=sa.case((unfinished & (T.c.due_at >= due), T.c.due_at), else_=due),
                        detail=sa.case((unfinished, TAKEN_OVER), else_=None),
                        started_at=now, finished_at=None, outcome=RUNNING, duration_ms=None,
                        lease_until=now + timedelta(seconds=self.lease_seconds))
                .returning(T.c.due_at, T.c.detail))).one_or_none()
        if claimed is None:
            return None
        return claimed.due_at, claimed.detail == TAKEN_OVER

    async def _finish(self, name: str, due: datetime, outcome: str, detail: str | None, duration_ms: int) -> bool:
        """Record the run's end, if this instance still holds the job (else another took it over meanwhile)."""
        async with self.engine.begin() as conn:
            now = await self._now(conn)
            result = await conn.execute(T.update().where(T.c.name == name, T.c.holder == self.instance,
                                                         T.c.due_at == due).values(
                finished_at=now, outcome=outcome, detail=(detail or "")[:200] or None, duration_ms=duration_ms,
                lease_until=now + timedelta(seconds=self.lease_seconds)))
        return bool(result.rowcount)

    async def _release(self, name: str) -> None:
        """Give the lease up (an orderly stop): another instance takes the job at its next look."""
        async with self.engine.begin() as conn:
            await conn.execute(T.update().where(T.c.name == name, T.c.holder == self.instance)
                               .values(lease_until=None))

    async def _keep_lease(self, name: str, schedule: Schedule) -> None:
        """While a run goes on: renew the lease every third of its length (an instance that dies stops doing so)."""
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                held, _ = await self._hold(name, schedule)
            except Exception as exc:  # noqa: BLE001  (the database away: try again; the lease may run out)
                log.warning("job.lease_renewal_failed", job=name, error=repr(exc)[:200])
                continue
            if not held:
                log.warning("job.lease_lost", job=name, instance=self.instance)
                return

    async def run(self, name: str, schedule: Schedule, job: Callable[[], Awaitable[object]],
                  clock: Clock = SYSTEM_CLOCK) -> None:
        """Run ``job`` at each due time of ``schedule`` (by ``clock``), under the job's lease, until cancelled;
        a failing run is logged and recorded, and the next due time goes on."""
        self.schedules[name] = (schedule, clock)
        log.info("job.scheduled", job=name, schedule=str(schedule), instance=self.instance)
        registered = False
        try:
            while True:
                try:
                    if not registered:
                        await self._register(name, schedule, clock)
                        registered = True
                    await self._turn(name, schedule, job, clock)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001  (the database away: look again shortly)
                    log.warning("job.lease_check_failed", job=name, error=repr(exc)[:200])
                await asyncio.sleep(self._pause(schedule, clock))
        finally:
            self.schedules.pop(name, None)
            if registered:
                try:
                    async with asyncio.timeout(2.0):
                        await self._release(name)
                except (Exception, asyncio.CancelledError):  # noqa: BLE001  (a dying database: the lease runs out)
                    pass

    def _pause(self, schedule: Schedule, clock: Clock) -> float:
        """Until the next due time, or the next renewal of the lease, whichever comes first."""
        now = clock.now()
        return max(0.05, min(self.renew_every, (schedule.next_due(now) - now).total_seconds() + 0.01))

    async def _turn(self, name: str, schedule: Schedule, job: Callable[[], Awaitable[object]], clock: Clock) -> None:
        held, previous = await self._hold(name, schedule)
        if not held:
            return
        if previous is not None:
            log.info("job.lease_taken", job=name, instance=self.instance, previous_holder=previous)
        claimed = await self._claim(name, schedule.latest_due(clock.now()))
        if claimed is None:
            return
        due, taken_over = claimed
        await self._run_once(name, schedule, job, due, taken_over)

    async def _run_once(self, name: str, schedule: Schedule, job: Callable[[], Awaitable[object]], due: datetime,
                        taken_over: bool) -> None:
        keeper = asyncio.create_task(self._keep_lease(name, schedule), name=f"job-lease:{name}")
        log.info("job.started", job=name, due_at=due.isoformat(), instance=self.instance, taken_over=taken_over)
        started = time.monotonic()
        outcome, detail, result, error = OK, None, None, None
        try:
            result = await job()
            detail = summary(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            outcome, detail, error = FAILED, type(exc).__name__, exc
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        duration_ms = round((time.monotonic() - started) * 1000)
        facts: dict[str, Any] = dict(job=name, due_at=due.isoformat(), duration_ms=duration_ms, instance=self.instance,
                                     taken_over=taken_over)
        if error is None:
            log.info("job.ran", result=str(result)[:200], **facts)
        else:
            log.error("job.failed", error=repr(error)[:300], **facts)
        metrics().job_run(name, outcome, duration_ms / 1000)
        if not await self._finish(name, due, outcome, detail, duration_ms):
            log.warning("job.lease_lost", job=name, due_at=due.isoformat(), instance=self.instance,
                        note="another instance took the job over during the run; its outcome stands")

    async def status(self) -> list[dict]:
        """Every job of the service as its row says (any instance's view is the same), with the next due time of
        those this instance schedules."""
        async with self.engine.connect() as conn:
            now = await self._now(conn)
            rows = (await conn.execute(sa.select(T).order_by(T.c.name))).mappings().all()
        out = []
        for row in rows:
            schedule, clock = self.schedules.get(row["name"], (None, SYSTEM_CLOCK))
            leased = row["holder"] is not None and row["lease_until"] is not None and row["lease_until"] >= now
            out.append({
                "name": row["name"], "schedule": row["schedule"],
                "holder": row["holder"] if leased else None, "held_here": leased and row["holder"] == self.instance,
                "lease_until": row["lease_until"] if leased else None,
                "next_due_at": schedule.next_due(clock.now()) if schedule is not None else None,
                "last_run": None if row["started_at"] is None else {
                    "due_at": row["due_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
                    "outcome": row["outcome"], "detail": row["detail"], "duration_ms": row["duration_ms"]},
            })
        return out
