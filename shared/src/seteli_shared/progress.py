"""Long jobs made visible: a settlement run, a bulk charge import, a rebuild of reporting's read models.

``track(sessions, kind)`` wraps such a job: it logs ``long_job.started`` (kind, id, total when known) and
``long_job.finished`` (outcome, items done, duration), and keeps a row in ``job_progress`` that ``GET /jobs/{id}``
(every service, operator staff) and ``seteli-ops follow`` read while the job runs. The job's id is the correlation
id of the request that started it (``X-Correlation-Id``: a caller that chose it can follow the job from another
connection while its request runs), or a new one outside a request. Inside the job, ``advance(n)`` counts items
done; it writes the row at most every ``WRITE_EVERY_SECONDS`` in a transaction of its own (never the job's), on
PostgreSQL only: SQLite holds one writer at a time, the job's own transaction, so there the row is written at the
start and the end and ``GET /jobs/{id}`` answers from this process's memory meanwhile.

The rows hold a kind, counts and times; never the job's data.
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import AsyncIterator

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from .ids import new_id
from .logging import correlation_id_var, get_logger
from .messaging import UTCDateTime

log = get_logger(__name__)
RUNNING, OK, FAILED = "running", "ok", "failed"
WRITE_EVERY_SECONDS = 0.5


class JobProgress(SQLModel, table=True):
    """A long job's progress: what kind, since when, how many items of how many, and how it ended."""

    __tablename__ = "job_progress"
    id: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(60), nullable=False))
    started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    #: the items the job has to do, when known (charges to settle, lines read so far, events archived)
    total: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    done: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    #: running | ok | failed
    outcome: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    #: the error's type when it failed (never data)
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))


T = JobProgress.__table__


def create_progress_table(op) -> None:  # noqa: ANN001
    op.create_table(
        "job_progress",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("total", sa.BigInteger),
        sa.Column("done", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(200)),
    )


#: the jobs running in this process, by id (what ``GET /jobs/{id}`` answers from where the row lags)
_running: dict[str, "Tracker"] = {}
#: the job the current task works for (``advance`` finds it without being handed it)
current: ContextVar["Tracker | None"] = ContextVar("current_long_job", default=None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Tracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], kind: str, job_id: str, total: int | None):
        self.sessions, self.kind, self.id = sessions, kind, job_id
        self.total, self.done = total, 0
        self.started_at = _now()
        self.started = time.monotonic()
        self._written = self.started
        self.postgres = False

    def row(self, outcome: str = RUNNING, detail: str | None = None) -> dict:
        return {"id": self.id, "kind": self.kind, "started_at": self.started_at, "updated_at": _now(),
                "finished_at": None if outcome == RUNNING else _now(), "total": self.total, "done": self.done,
                "outcome": outcome, "detail": detail}

    async def _write(self, outcome: str = RUNNING, detail: str | None = None) -> None:
        row = self.row(outcome, detail)
        async with self.sessions() as session, session.begin():
            self.postgres = session.bind.dialect.name == "postgresql"
            if self.postgres:
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(T).values(**row)
            await session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={
                k: stmt.excluded[k] for k in row if k != "id"}))
        self._written = time.monotonic()

    async def set_total(self, total: int) -> None:
        self.total = total
        log.info("long_job.total", kind=self.kind, job_id=self.id, total=total)
        await self._maybe_write(force=True)

    async def advance(self, n: int = 1) -> None:
        self.done += n
        await self._maybe_write()

    async def _maybe_write(self, force: bool = False) -> None:
        if self.postgres and (force or time.monotonic() - self._written >= WRITE_EVERY_SECONDS):
            try:
                await self._write()
            except Exception as exc:  # noqa: BLE001  (progress informs: it never fails the job)
                log.warning("long_job.progress_not_written", kind=self.kind, job_id=self.id, error=repr(exc)[:200])


@asynccontextmanager
async def track(sessions: async_sessionmaker[AsyncSession], kind: str, total: int | None = None,
                job_id: str | None = None) -> AsyncIterator[Tracker]:
    """Run a long job under a progress row (see the module's text)."""
    tracker = Tracker(sessions, kind, job_id or correlation_id_var.get() or new_id(), total)
    _running[tracker.id] = tracker
    token = current.set(tracker)
    log.info("long_job.started", kind=kind, job_id=tracker.id, total=total)
    try:
        await tracker._write()
    except Exception as exc:  # noqa: BLE001
        log.warning("long_job.progress_not_written", kind=kind, job_id=tracker.id, error=repr(exc)[:200])
    outcome, detail = OK, None
    try:
        yield tracker
    except BaseException as exc:
        outcome, detail = FAILED, type(exc).__name__
        raise
    finally:
        current.reset(token)
        _running.pop(tracker.id, None)
        duration_ms = round((time.monotonic() - tracker.started) * 1000)
        (log.info if outcome == OK else log.error)(
            "long_job.finished", kind=kind, job_id=tracker.id, outcome=outcome, done=tracker.done,
            total=tracker.total, duration_ms=duration_ms, detail=detail)
        try:
            await tracker._write(outcome, detail)
        except Exception as exc:  # noqa: BLE001
            log.warning("long_job.progress_not_written", kind=kind, job_id=tracker.id, error=repr(exc)[:200])


async def advance(n: int = 1) -> None:
    """Count ``n`` items done for the current long job (nothing outside one)."""
    tracker = current.get()
    if tracker is not None:
        await tracker.advance(n)


async def set_total(total: int) -> None:
    tracker = current.get()
    if tracker is not None:
        await tracker.set_total(total)


async def read(session: AsyncSession, job_id: str) -> dict | None:
    """The job's progress: this process's own figures while it runs here, else its row; None if unknown."""
    here = _running.get(job_id)
    if here is not None:
        return here.row()
    found = (await session.execute(sa.select(T).where(T.c.id == job_id))).mappings().first()
    return dict(found) if found is not None else None
