"""Database: SQLModel over async SQLAlchemy. ``DATABASE_URL`` picks PostgreSQL (asyncpg) or the
embedded default, a SQLite file per service. The schema comes from Alembic migrations."""
from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import AsyncIterator

from sqlalchemy import MetaData, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy import types as sa_types
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession


def make_engine(url: str, **kw) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 10)
    pre_ping = kw.pop("pool_pre_ping", True)
    engine = create_async_engine(url, **kw)
    if pre_ping:
        _ping_when_idle(engine)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _silent_is_gone(context) -> None:  # noqa: ANN001
        """A statement the driver gave up on (``command_timeout``) or a socket error: the connection is thrown
        away (invalidated), not rolled back first (a rollback on a silent server waits out a timeout of its own)."""
        if isinstance(context.original_exception, OSError):  # TimeoutError and ConnectionError included
            context.is_disconnect = True
            if isinstance(context.original_exception, TimeoutError):  # this connection's statement, not the
                context.invalidate_pool_on_disconnect = False           # others': they time out by themselves

    @event.listens_for(engine.sync_engine, "invalidate")
    def _cut_at_once(_dbapi_connection, record, exception) -> None:  # noqa: ANN001
        """A connection invalidated for a socket error or a timeout (a statement's, the pre-ping's) is cut at
        once: SQLAlchemy would first try a graceful close, waiting up to 2 s on a server that went silent."""
        if isinstance(exception, OSError):
            driver = getattr(record, "driver_connection", None)
            if driver is not None and not driver.is_closed():
                driver.terminate()

    return engine


#: a pooled PostgreSQL connection given back less than this many seconds ago is taken again without a round trip
#: to the server (``_ping_when_idle``)
PING_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "seteli_checked_in_at"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """The pool's pre-ping at the cost it is worth (``pool_pre_ping=True``, ``DB_POOL_PRE_PING``): SQLAlchemy's own
    pings every checkout with ``BEGIN; ; ROLLBACK``, three round trips, as many as the rest of a short request
    (a client's login: ``BEGIN``, lock, select, insert, ``COMMIT``). Here a connection is tested before use
    with no round trip when it was given back moments ago (``PING_IDLE_SECONDS``): it must not be closed (a
    server that restarted, or a proxy or network that cut it, closes its socket, which the driver sees at
    once); one idle longer is pinged as SQLAlchemy pings. A connection found closed or failing its ping is
    thrown away and the pool connects anew (SQLAlchemy's ``DisconnectionError`` from a ``checkout`` listener:
    its documented pessimistic disconnect handling); a server that cannot be reached fails the checkout as
    the pre-ping's reconnect did. A connection just opened is not pinged."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _given_back(_dbapi_connection, record) -> None:  # noqa: ANN001
        if record is not None and record.dbapi_connection is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _still_there(dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise sa_exc.DisconnectionError("the pooled connection was closed")
        given_back = record.info.pop(_CHECKED_IN_AT, None)
        if given_back is None or time.monotonic() - given_back <= PING_IDLE_SECONDS:
            return  # just opened, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001  (any failure: a new connection; a server that is down fails it)
            if driver is not None and not driver.is_closed():
                driver.terminate()  # not a graceful close: a silent server would hold it
            raise sa_exc.DisconnectionError(f"the pooled connection failed its ping: {type(exc).__name__}") from exc


def outage_limits(connect_timeout: float, statement_timeout: float, pool_timeout: float) -> dict:
    """``make_engine`` options for PostgreSQL that bound how long a database that is down or stalled can hold
    a caller: the connect (asyncpg's ``timeout``), every statement (asyncpg's ``command_timeout``: the
    driver stops waiting and has the server cancel the statement; it also bounds the pool's pre-ping on a
    connection whose server went silent) and the wait for a pooled connection. The error each raises is
    one ``faults.database_fault`` knows."""
    return {"connect_args": {"timeout": connect_timeout, "command_timeout": statement_timeout},
            "pool_timeout": pool_timeout}


#: the driver's timeout for a set-based statement over a whole run (a settlement run's charges at once), which
#: may take longer than ``DB_STATEMENT_TIMEOUT_SECONDS`` lets a request's statements take
WHOLE_RUN_STATEMENT_SECONDS = 900.0


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commits on success, rolls back on any error."""
    async with sessions() as session:
        async with session.begin():
            yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


# ------------------------------------------------------------------ migrations
#: the shared tables' own branch of migrations, added to every service's (``seteli_shared/migrations``)
SHARED_VERSIONS = Path(__file__).parent / "migrations" / "versions"


def has_shared_tables(migrations_dir: Path) -> bool:
    """Whether these are a service's migrations (``services/<name>/src/<name>/migrations``): a service has the
    shared tables (the scheduled jobs'); the portal, a front end, does not."""
    from .manifest import BY_NAME

    info = BY_NAME.get(Path(migrations_dir).parent.name)
    return info is not None and info.kind == "service"


def _alembic_config(migrations_dir: Path, url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    locations = [Path(migrations_dir) / "versions"]
    if has_shared_tables(migrations_dir):
        locations.append(SHARED_VERSIONS)
    cfg.set_main_option("version_locations", os.pathsep.join(str(p) for p in locations))
    return cfg


def upgrade(migrations_dir: Path, url: str, revision: str = "heads", settings: object = None) -> None:
    """Apply migrations (blocking; runs its own event loop, so call it from a thread when async): the
    service's own and, for a service, the shared tables' branch (``heads``: both). ``settings``: the
    service's own, for a migration that needs one of them (``migration_settings``)."""
    from alembic import command

    cfg = _alembic_config(migrations_dir, url)
    cfg.attributes["settings"] = settings
    command.upgrade(cfg, revision)


async def upgrade_async(migrations_dir: Path, url: str, settings: object = None) -> None:
    await asyncio.to_thread(upgrade, migrations_dir, url, "heads", settings)


def migration_settings(settings_class):  # noqa: ANN001, ANN201
    """Inside a migration: the settings of the service being migrated (as ``upgrade`` was given them, else
    read from the environment as the service reads them), for a data migration that needs a key."""
    from alembic import context

    given = context.config.attributes.get("settings")
    if isinstance(given, settings_class):
        return given
    return settings_class(database_url=context.config.get_main_option("sqlalchemy.url"))


def service_metadata(*models_modules: ModuleType, messaging_tables: bool = True) -> MetaData:
    """The tables of one service's database: those declared in its models module(s) plus the outbox,
    the inbox, the audit log, the scheduled jobs and the long jobs' progress every service has (``messaging_tables=False``: only its
    own, for the portal, which neither publishes nor consumes). A copy, so that the tables of other services
    imported into the same process (``SQLModel.metadata`` is global) never leak into it."""
    from sqlmodel import SQLModel

    from . import audit, jobs, messaging, progress

    modules = ((messaging, audit, jobs, progress) if messaging_tables else ()) + models_modules
    md = MetaData()
    for module in modules:
        # its own classes, and those it imports from modules of its own package (a service's models
        # module may gather tables kept beside it, e.g. registry.price_models): never another package's
        own = (module.__name__, module.__name__.rpartition(".")[0] + ".")
        for obj in vars(module).values():
            table = getattr(obj, "__table__", None)
            if (isinstance(obj, type) and issubclass(obj, SQLModel) and table is not None
                    and (obj.__module__ == own[0] or own[1] != "." and obj.__module__.startswith(own[1]))
                    and table.name not in md.tables):
                table.to_metadata(md)
    return md


def compare_type(context, inspected_column, metadata_column, inspected_type, metadata_type):  # noqa: ANN001, ANN201
    """Alembic's type comparison, seeing through our ``TypeDecorator``s (``UTCDateTime`` is stored as
    ``DateTime(timezone=True)``) and the SQLite variant of ``BigIntPK``."""
    from sqlalchemy.types import TypeDecorator

    dialect = context.dialect
    if isinstance(metadata_type, TypeDecorator):
        metadata_type = metadata_type.load_dialect_impl(dialect)
    metadata_type = metadata_type.dialect_impl(dialect)  # a variant's type for this dialect (``with_variant``)
    if isinstance(metadata_type, sa_types.DateTime) and isinstance(inspected_type, sa_types.DateTime):
        if dialect.name == "sqlite":  # SQLite keeps no time zone flag: any DATETIME is one
            return False
        return bool(metadata_type.timezone) != bool(inspected_type.timezone)
    return None  # alembic's own comparison


#: the PostgreSQL advisory lock (of the database being migrated) that migrations take for their transaction
MIGRATION_LOCK = 0x5E7E11_0001


def run_alembic_env(target_metadata: MetaData | None = None) -> None:
    """Body of every service's ``migrations/env.py``: online migrations on the async engine. With the
    service's metadata (``service_metadata(models)``) ``alembic revision --autogenerate`` works and
    the models-versus-migrations test compares against it."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")

    def do_run(connection) -> None:  # noqa: ANN001
        if connection.dialect.name == "postgresql":
            # instances that start together (each migrates at its start) take turns: the later ones find the
            # schema at head and change nothing, instead of creating the same tables at once
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=compare_type,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = make_engine(url)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(run())


async def once_more_on_conflict(operation):  # noqa: ANN001, ANN201
    """Run an idempotent unit of work; when a concurrent twin won a unique constraint, run it again
    so that it finds the twin's result and answers as a retry would."""
    from sqlalchemy.exc import IntegrityError

    try:
        return await operation()
    except IntegrityError:
        return await operation()


# ------------------------------------------------------------------ the PostgreSQL driver, directly
def driver_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the driver's connection is gone (the server closed it, the network dropped)."""
    import asyncpg

    return isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError))


def _let_go(conn, dead: bool) -> None:  # noqa: ANN001
    """A dead connection is cut at once: invalidating it would first try a graceful close (up to 2 s on a
    server that went silent)."""
    if dead and not conn.is_closed():
        conn.terminate()


#: connections a ``driver_connection`` keeps checked out between uses, per engine (at most its pool's size), and
#: how long one may wait unused there before it goes back to the pool
KEPT_CONNECTIONS_MAX = 10
KEPT_IDLE_SECONDS = 10.0


class _Kept:
    """An engine's pooled connections kept checked out between ``driver_connection`` uses: taking one from here
    skips the pool's checkout and its pre-ping (``BEGIN; ;  ROLLBACK``: three round trips, more than the one or
    two statements of a fast-path charge). Only a connection used moments ago is kept (``KEPT_IDLE_SECONDS``);
    an older one goes back to the pool, to be pinged at its next checkout as every connection is. A connection
    found dead drops all the kept ones (a restarted server cut them all); the caller's retry takes a pinged one."""

    def __init__(self, size: int):
        self.size = size
        self.idle: list[tuple[object, object, float]] = []  # (AsyncConnection, asyncpg connection, kept at)

    def take(self, now: float):  # noqa: ANN201
        stale = []
        found = None
        while self.idle:
            connection, conn, at = self.idle.pop()
            if now - at <= KEPT_IDLE_SECONDS and not conn.is_closed():
                found = (connection, conn)
                break
            stale.append(connection)
        return found, stale + ([c for c, _, _ in self.idle] if found is None else [])

    def drop_all(self) -> list:
        out = [c for c, _, _ in self.idle]
        self.idle.clear()
        return out


_kept: dict[int, tuple[AsyncEngine, _Kept]] = {}


def _kept_of(engine: AsyncEngine) -> _Kept:
    entry = _kept.get(id(engine))
    if entry is None or entry[0] is not engine:
        size = min(KEPT_CONNECTIONS_MAX, getattr(engine.sync_engine.pool, "size", lambda: 0)())
        entry = (engine, _Kept(size))
        _kept[id(engine)] = entry

        @event.listens_for(engine.sync_engine, "engine_disposed")
        def _cut_kept(_engine) -> None:  # noqa: ANN001
            """A dispose not preceded by ``release_kept`` (it runs in SQLAlchemy's greenlet): close them."""
            for connection in entry[1].drop_all():
                sync = connection.sync_connection
                if sync is not None and not sync.closed:
                    sync.invalidate()
                    sync.close()
            _kept.pop(id(engine), None)
    return entry[1]


async def release_kept(engine: AsyncEngine) -> None:
    """Give the connections ``driver_connection`` keeps back to the engine's pool (before its dispose)."""
    entry = _kept.pop(id(engine), None)
    if entry is not None and entry[0] is engine:
        for connection in entry[1].drop_all():
            await _close_quietly(connection)


async def _close_quietly(connection) -> None:  # noqa: ANN001
    try:
        await connection.close()
    except Exception:  # noqa: BLE001,S110  (a connection that failed its return is the pool's to forget)
        pass


@asynccontextmanager
async def driver_connection(engine: AsyncEngine):  # noqa: ANN201
    """A pooled connection's own asyncpg connection (SQLAlchemy's public ``AsyncConnection.get_raw_connection``
    and ``driver_connection``), outside any transaction (each statement its own transaction: for single
    statements that do a whole change). A connection found dead, or left inside a transaction, is thrown away
    (``AsyncConnection.invalidate``), never pooled again; a dead one raises ``ConnectionError``, so that an
    idempotent caller may try once more on a fresh one. A connection used moments ago is taken again without
    the pool's checkout and pre-ping (``_Kept``)."""
    loop = asyncio.get_running_loop()
    kept = _kept_of(engine)
    found, stale = kept.take(loop.time())
    for old in stale:
        await _close_quietly(old)
    if found is not None:
        connection, conn = found
    else:
        connection = await engine.connect()
        try:
            conn = (await connection.get_raw_connection()).driver_connection
        except BaseException:
            await connection.close()
            raise
    dead = keep = False
    try:
        yield conn
        keep = True
    except Exception as exc:
        if driver_connection_lost(exc) or conn.is_closed():
            dead = True
            for other in kept.drop_all():  # a server restart cut them all: the next use takes a pinged one
                await _close_quietly(other)
            raise ConnectionError(f"database connection lost: {type(exc).__name__}") from exc
        keep = True
        raise
    finally:
        if not dead and conn.is_in_transaction():  # never pooled inside a transaction
            dead = True
        if dead:
            _let_go(conn, dead)
            await connection.invalidate()
            await _close_quietly(connection)
        elif keep and len(kept.idle) < kept.size and _kept.get(id(engine), (None,))[0] is engine:
            kept.idle.append((connection, conn, loop.time()))
        else:  # a cancelled use, or enough kept: back to the pool as before
            await _close_quietly(connection)
