"""Database: SQLModel over async SQLAlchemy. ``DATABASE_URL`` picks PostgreSQL (asyncpg) or the
embedded default, a SQLite file per service. The schema comes from Alembic migrations."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import AsyncIterator

from sqlalchemy import MetaData, event, text
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
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kw)


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
def _alembic_config(migrations_dir: Path, url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str, revision: str = "head") -> None:
    """Apply migrations (blocking; runs its own event loop, so call it from a thread when async)."""
    from alembic import command

    command.upgrade(_alembic_config(migrations_dir, url), revision)


async def upgrade_async(migrations_dir: Path, url: str) -> None:
    await asyncio.to_thread(upgrade, migrations_dir, url)


def service_metadata(*models_modules: ModuleType) -> MetaData:
    """The tables of one service's database: those declared in its models module(s) plus the outbox,
    the inbox and the audit log every service has. A copy, so that the tables of other services
    imported into the same process (``SQLModel.metadata`` is global) never leak into it."""
    from sqlmodel import SQLModel

    from . import audit, messaging

    modules = (messaging, audit, *models_modules)
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
    metadata_type = metadata_type._variant_mapping.get(dialect.name, metadata_type) \
        if getattr(metadata_type, "_variant_mapping", None) else metadata_type
    if isinstance(metadata_type, sa_types.DateTime) and isinstance(inspected_type, sa_types.DateTime):
        if dialect.name == "sqlite":  # SQLite keeps no time zone flag: any DATETIME is one
            return False
        return bool(metadata_type.timezone) != bool(inspected_type.timezone)
    return None  # alembic's own comparison


def run_alembic_env(target_metadata: MetaData | None = None) -> None:
    """Body of every service's ``migrations/env.py``: online migrations on the async engine. With the
    service's metadata (``service_metadata(models)``) ``alembic revision --autogenerate`` works and
    the models-versus-migrations test compares against it."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")

    def do_run(connection) -> None:  # noqa: ANN001
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
