"""Shared test fixtures: the real PostgreSQL and RabbitMQ.

Servers come from TEST_POSTGRES_URL / TEST_AMQP_URL when set, else the local ones on their standard
ports, else (on machines with Docker) testcontainers starts them. A test never runs against a mock
only. Each test gets its own databases and its own bus namespace, removed afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from seteli_shared import contract
from seteli_shared.manifest import NAMES
from seteli_shared.testing import delete_namespace, sweep_namespaces

# ---------------------------------------------------------------- every published message against the contract
# Set before any service starts (in this process or as a child of it): each outbox relay then validates every
# message it publishes against docs/asyncapi.yaml and writes a broken one to the violations file
# (seteli_shared.contract). A test during which one appears fails; the run ends with the counts.
_CONTRACT_DIR = Path(tempfile.mkdtemp(prefix="seteli-contract-"))
os.environ.setdefault(contract.CHECK_VARIABLE, str(Path(__file__).resolve().parent / "docs" / "asyncapi.yaml"))
os.environ.setdefault(contract.VIOLATIONS_VARIABLE, str(_CONTRACT_DIR / "violations.jsonl"))
os.environ.setdefault(contract.COUNTS_VARIABLE, str(_CONTRACT_DIR / "counts.jsonl"))


def _violations() -> list[str]:
    path = Path(os.environ[contract.VIOLATIONS_VARIABLE])
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(autouse=True)
def _published_messages_keep_the_contract():
    """Fails the test during which a service published a message its published schema refuses."""
    before = len(_violations())
    yield
    new = _violations()[before:]
    assert not new, "published messages broke docs/asyncapi.yaml:\n" + "\n".join(new)


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001
    _sweep_namespaces()
    checked = contract.published()
    if checked is not None:
        checked.write_counts()
    counts: dict[str, int] = {}
    path = Path(os.environ[contract.COUNTS_VARIABLE])
    for line in path.read_text().splitlines() if path.exists() else []:
        for message_type, n in json.loads(line)["checked"].items():
            counts[message_type] = counts.get(message_type, 0) + n
    violations = _violations()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and counts:
        reporter.write_line(f"contract: {sum(counts.values())} published messages of {len(counts)} types checked "
                            f"against docs/asyncapi.yaml, {len(violations)} broke it")
    if violations:
        session.exitstatus = 1
    if os.environ[contract.VIOLATIONS_VARIABLE].startswith(str(_CONTRACT_DIR)):
        shutil.rmtree(_CONTRACT_DIR, ignore_errors=True)


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


_NAMESPACES_TO_SWEEP: list[str] = []


_AMQP_URLS: list[str] = []


def _sweep_namespaces() -> None:
    """At the end of the run, whatever the tests' namespaces still hold on the broker (outside systems'
    users and queues, policies) goes, found in one listing of the broker for all of them."""
    if _NAMESPACES_TO_SWEEP and _AMQP_URLS:
        import asyncio

        asyncio.run(sweep_namespaces(_AMQP_URLS[0], _NAMESPACES_TO_SWEEP))


@pytest.fixture
async def namespace(amqp_url):
    """A bus namespace of this test's own; its queues and exchanges are deleted afterwards, and anything
    else of it on the broker at the end of the run."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    _NAMESPACES_TO_SWEEP.append(ns)
    _AMQP_URLS[:] = [amqp_url]
    yield ns
    queues = [f"{ns}.{s}" for s in (*NAMES, "test", "spy")]
    await delete_namespace(amqp_url, ns, queues, listing=False)
