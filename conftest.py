"""Shared test fixtures: the real PostgreSQL and RabbitMQ.

Servers come from TEST_POSTGRES_URL / TEST_AMQP_URL when set, else the local ones on their standard
ports, else (on machines with Docker) testcontainers starts them. A test never runs against a mock
only. Each test gets its own databases and its own bus namespace, removed afterwards.
"""
from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import asyncpg
import pytest

from seteli_shared.manifest import NAMES
from seteli_shared.testing import delete_namespace


def _reachable(url: str, default_port: int) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> str:
    """A libpq DSN of a database we may CREATE/DROP databases from."""
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if _reachable(url, 5432):
        yield url
        return
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:  # pragma: no cover
        pytest.fail(f"PostgreSQL not reachable at {url} and testcontainers is missing")
    with PostgresContainer("postgres:15", driver=None) as pg:  # pragma: no cover (needs Docker)
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if _reachable(url, 5672):
        yield url
        return
    from testcontainers.rabbitmq import RabbitMqContainer  # pragma: no cover (needs Docker)

    with RabbitMqContainer("rabbitmq:3.10") as rmq:  # pragma: no cover
        p = rmq.get_connection_params()
        yield f"amqp://guest:guest@{p.host}:{p.port}/"


@pytest.fixture(scope="session")
def own_broker():
    """A RabbitMQ node of this test run's own (``seteli_shared.rabbitnodes``), for tests that stop and start
    a broker: the machine's shared ``rabbit@localhost`` is never stopped. Started on first use, removed at
    the end of the run; skipped where no node can be started (no rabbitmq-server, not root)."""
    from seteli_shared import rabbitnodes

    why = rabbitnodes.available()
    if why:
        pytest.skip(why)
    cluster = rabbitnodes.Cluster.start(1)
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def broker_cluster():
    """A three-node RabbitMQ cluster of this test run's own (``seteli_shared.rabbitnodes``; about a minute to
    start), for tests that stop one of its nodes: the machine's ``rabbit@localhost`` is never touched. Removed
    at the end of the run; skipped where no node can be started (no rabbitmq-server, not root)."""
    from seteli_shared import rabbitnodes

    why = rabbitnodes.available()
    if why:
        pytest.skip(why)
    cluster = rabbitnodes.Cluster.start(3, label=f"c{os.getpid()}")
    try:
        yield cluster
    finally:
        cluster.remove()


class PostgresDatabases:
    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    async def create(self, label: str = "t") -> str:
        """Create an empty database; returns its SQLAlchemy asyncpg URL."""
        name = f"seteli_{label}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        u = urlparse(self.admin_dsn)
        auth = u.username or "postgres"
        if u.password:
            auth += f":{u.password}"
        return f"postgresql+asyncpg://{auth}@{u.hostname}:{u.port or 5432}/{name}"

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def pg(postgres_admin_dsn):
    dbs = PostgresDatabases(postgres_admin_dsn)
    yield dbs
    await dbs.drop_all()


@pytest.fixture
async def namespace(amqp_url):
    """A bus namespace of this test's own; its queues and exchanges are deleted afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    queues = [f"{ns}.{s}" for s in (*NAMES, "test", "spy")]
    await delete_namespace(amqp_url, ns, queues)
