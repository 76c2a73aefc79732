"""The whole system as separate processes against the real RabbitMQ and PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from seteli_shared.manifest import NAMES as SERVICES
from seteli_shared.ports import free_port

BIN = Path(sys.executable).parent
#: where the portal's calls to the services come from (tests/browser): the vouchers service's trusted proxy
PORTAL_ADDRESS = "127.0.0.1"


class System:
    def __init__(self, urls: dict[str, str], procs: dict[str, subprocess.Popen], logs: dict[str, Path],
                 databases: dict[str, str] | None = None):
        self.urls, self.procs, self.logs = urls, procs, logs
        self.databases = databases or {}  # service -> its SQLAlchemy URL

    def client(self, service: str, **kw) -> httpx.AsyncClient:  # noqa: ANN003
        return httpx.AsyncClient(base_url=self.urls[service], timeout=15, **kw)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs.values())


@pytest.fixture(scope="module")
async def system(postgres_admin_dsn, amqp_url, tmp_path_factory):  # noqa: ANN001
    from seteli_shared.testing import delete_namespace

    from conftest import PostgresDatabases  # the root conftest

    dbs = PostgresDatabases(postgres_admin_dsn)
    # "p" between the two numbers: glued together they made a run of ten digits, a personal identity code now
    # and then (once in ~850), and outside systems' broker users are named after the namespace
    ns = f"e2e{os.getpid()}p{int(time.time()) % 100000}"
    workdir = tmp_path_factory.mktemp("system")
    procs, urls, logs, databases = {}, {}, {}, {}
    try:
        for name in SERVICES:
            port = free_port()
            databases[name] = await dbs.create(name)
            env = dict(os.environ, DATABASE_URL=databases[name], AMQP_URL=amqp_url, BUS_NAMESPACE=ns,
                       BROKER_USER_PREFIX=f"{ns}-",
                       ENVIRONMENT="test", DATA_DIR=str(workdir), RELAY_IDLE_SECONDS="0.05",
                       # the portal (tests/browser) calls from 127.0.0.1 and names the browser, as in `make run`;
                       # a test calling from another loopback address (127.0.0.2) is an untrusted stranger
                       TRUSTED_PROXIES=PORTAL_ADDRESS if name == "vouchers" else "")
            logs[name] = workdir / f"{name}.log"
            procs[name] = subprocess.Popen([str(BIN / f"seteli-{name}"), "serve", "--port", str(port)], env=env,
                                           stdout=logs[name].open("wb"), stderr=subprocess.STDOUT)
            urls[name] = f"http://127.0.0.1:{port}"
        # four services migrating and starting at once on a busy machine (SETELI_TEST_START_SECONDS for more)
        deadline = time.monotonic() + float(os.environ.get("SETELI_TEST_START_SECONDS", "180"))
        async with httpx.AsyncClient(timeout=2) as c:
            for name, url in urls.items():
                while True:
                    try:
                        if (await c.get(f"{url}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if procs[name].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not become ready:\n{logs[name].read_text()}")
                    time.sleep(0.2)
        system = System(urls, procs, logs, databases)
        system.namespace = ns
        # outside systems' broker users of this run are "<ns>-funder-<id>" (the broker is shared)
        system.broker_user_prefix = f"{ns}-"
        yield system
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        await dbs.drop_all()
        await delete_namespace(amqp_url, ns, [f"{ns}.{s}" for s in SERVICES])
