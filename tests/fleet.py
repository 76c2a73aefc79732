"""Several instances of each service as processes of their own on shared PostgreSQL databases and one bus
namespace, behind the load balancer of `make scale` (``scripts/balancer.py``, run here in the test's event
loop): what tests/test_instances.py and tests/test_cluster.py start. Each instance logs JSON lines to a file
of its own; ``kill`` ends one with a signal (``kill -9`` by default) and ``restart`` starts it again on its
port."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from seteli_shared.auth import mint
from seteli_shared.manifest import BY_NAME
from seteli_shared.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def script(name: str):  # noqa: ANN201
    """A module of scripts/ (not a package), imported by its path."""
    spec = importlib.util.spec_from_file_location(f"seteli_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


balancer = script("balancer")


def bearer(role: str, **claims: str) -> dict:
    return {"Authorization": f"Bearer {mint(f'fleet:{role}', [role], **claims)}"}


@dataclass
class Instance:
    name: str  # the service
    number: int  # 1, 2, ...
    port: int
    log: Path
    env: dict
    proc: subprocess.Popen | None = None

    @property
    def label(self) -> str:
        return f"{self.name}#{self.number}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([str(BIN / f"seteli-{self.name}"), "serve", "--port", str(self.port)],
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lines(self) -> list[dict]:
        """Its JSON log lines (the others skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


@dataclass
class Fleet:
    workdir: Path
    amqp_url: str
    namespace: str
    databases: dict[str, str]
    instances: dict[str, list[Instance]] = field(default_factory=dict)
    pools: dict[str, object] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    lb: object | None = None

    def url(self, name: str) -> str:
        """The one address of the service's instances (the balancer's)."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def client(self, name: str, *, fresh_connections: bool = True, **kw) -> httpx.AsyncClient:  # noqa: ANN003
        """A client of the service's one address; ``fresh_connections``: a new connection (so the next instance in
        turn) for every request."""
        limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else httpx.Limits()
        return httpx.AsyncClient(base_url=self.url(name), timeout=30, limits=limits, **kw)

    def env(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ, ENVIRONMENT="test", AMQP_URL=self.amqp_url, BUS_NAMESPACE=self.namespace,
                   DATA_DIR=str(self.workdir), DATABASE_URL=self.databases[name], RELAY_IDLE_SECONDS="0.05",
                   FUNDER_USER_PREFIX=f"{self.namespace}-", JOB_LEASE_SECONDS="2",
                   TRUSTED_PROXIES="127.0.0.1" if name == "vouchers" else "")
        if BY_NAME[name].kind == "frontend":
            for service in ("registry", "vouchers", "payments", "reporting"):
                if service in self.ports:
                    env[f"{service.upper()}_URL"] = self.url(service)
            env["PORTAL_URL"] = self.url(name)
        env.update(extra)
        return env

    async def start(self, counts: dict[str, int], extra: dict[str, dict[str, str]] | None = None,
                    timeout: float = 420.0) -> None:
        """``counts[name]`` instances of each service, started at once (they migrate at once: the migrations take
        turns), behind the balancer; waits until every one answers ready."""
        self.ports = {name: free_port() for name in counts}
        for name, n in counts.items():
            self.instances[name] = [
                Instance(name, i + 1, free_port(), self.workdir / f"{name}-{i + 1}.log", {})
                for i in range(n)]
            for inst in self.instances[name]:
                inst.env = self.env(name, (extra or {}).get(name, {}))
        self.pools = {name: balancer.Pool(("127.0.0.1", self.ports[name]), [("127.0.0.1", i.port) for i in insts])
                      for name, insts in self.instances.items()}
        self.lb = balancer.Balancer(list(self.pools.values()))
        await self.lb.start()
        for insts in self.instances.values():
            for inst in insts:
                inst.start()
        await self.wait_ready([i for insts in self.instances.values() for i in insts], timeout)

    async def wait_ready(self, instances: list[Instance], timeout: float = 420.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=3) as c:
            for inst in instances:
                while True:
                    try:
                        if (await c.get(f"{inst.url}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if not inst.alive() or time.monotonic() > deadline:
                        state = "alive" if inst.alive() else "ended"
                        raise RuntimeError(f"{inst.label} did not become ready ({state}):\n"
                                           f"{inst.log.read_text()[-3000:]}")
                    await asyncio.sleep(0.3)

    def kill(self, inst: Instance, sig: int = signal.SIGKILL) -> None:
        inst.proc.send_signal(sig)
        inst.proc.wait(30)

    async def restart(self, inst: Instance, **extra: str) -> None:
        inst.env = {**inst.env, **extra}
        inst.start()
        await self.wait_ready([inst])

    def find(self, name: str, pid: int) -> Instance:
        return next(i for i in self.instances[name] if i.proc is not None and i.proc.pid == pid)

    def lines(self, name: str) -> list[tuple[Instance, dict]]:
        return [(inst, line) for inst in self.instances[name] for line in inst.lines()]

    def handed(self, name: str) -> dict[int, int]:
        """Connections the balancer handed to each instance of the service (by port)."""
        return {port: n for (_host, port), n in self.pools[name].handed.items()}

    async def stop(self) -> None:
        every = [i for insts in self.instances.values() for i in insts if i.alive()]
        for inst in every:
            inst.proc.terminate()
        for inst in every:
            try:
                inst.proc.wait(20)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()
        if self.lb is not None:
            await self.lb.close()
