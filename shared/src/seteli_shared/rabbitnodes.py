"""RabbitMQ nodes of our own, beside the machine's broker: for tests and benchmarks that stop, restart or
cluster a broker (the machine's ``rabbit@localhost`` is shared and never touched).

Each node runs from the installed ``rabbitmq-server`` under a new node name (``seteli<n>x<pid>@localhost``),
with its own AMQP and distribution ports and its own data, log and config files in a directory that
belongs to the ``rabbitmq`` user (the server drops to it; a directory it cannot write makes the node die
silently). ``Cluster`` joins several such nodes (``join_cluster`` through node 1). Everything is removed by
``remove()``; nodes left behind by a killed test are found by their names (``leftovers()``).

    cluster = Cluster.start(3)            # three nodes, clustered
    urls = cluster.urls                   # amqp://guest:guest@127.0.0.1:<port>/ each
    cluster.nodes[1].stop_app()           # a node lost ...
    cluster.nodes[1].start_app()          # ... and back
    cluster.remove()
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from seteli_shared.ports import free_port

PREFIX = "seteli"


class NodeFailed(RuntimeError):
    pass


def available() -> str | None:
    """Why nodes of our own cannot run here (None when they can)."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server is not installed"
    if os.geteuid() != 0:
        return "starting a RabbitMQ node of our own needs root (the server drops to the rabbitmq user)"
    return None


def _ctl(node: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["rabbitmqctl", "-q", "-n", node, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise NodeFailed(f"rabbitmqctl -n {node} {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


@dataclass
class Node:
    """One RabbitMQ node of our own."""

    name: str  # e.g. seteli1x4242 (the node is name@localhost)
    port: int
    dist_port: int
    base: Path

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return dict(os.environ, RABBITMQ_NODENAME=self.nodename, RABBITMQ_NODE_PORT=str(self.port),
                    RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(self.dist_port),
                    RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"), RABBITMQ_LOG_BASE=str(self.base / "log"),
                    RABBITMQ_PID_FILE=str(self.base / "pid"),
                    RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
                    RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"))

    def prepare(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.port}\nloopback_users = none\n"
            # a quorum queue's member on a node that comes back catches up from the others
            "cluster_partition_handling = pause_minority\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base)], check=True)
        os.chmod(self.base, 0o755)

    def start(self, timeout: float = 90) -> None:
        """Start the node (the whole Erlang VM) and wait until its broker app runs."""
        self.prepare()
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), cwd=self.base, check=True,
                       capture_output=True, timeout=60)
        self.wait(timeout)

    def wait(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            out = _ctl(self.nodename, "await_startup", "--timeout", "10", check=False, timeout=30)
            if out.returncode == 0:
                return
            last = out.stderr.strip()[-300:]
            time.sleep(0.5)
        raise NodeFailed(f"{self.nodename} did not start within {timeout} s: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        if not logs:
            return "(no log)"
        return "\n".join(logs[0].read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Halt the node (its Erlang VM ends)."""
        _ctl(self.nodename, "stop", check=False, timeout=120)

    def stop_app(self) -> None:
        _ctl(self.nodename, "stop_app")

    def start_app(self, timeout: float = 90) -> None:
        _ctl(self.nodename, "start_app", timeout=timeout)
        self.wait(timeout)

    def ctl(self, *args: str, timeout: float = 120) -> str:
        return _ctl(self.nodename, *args, timeout=timeout).stdout


@dataclass
class Cluster:
    """One or more nodes of our own, clustered through the first."""

    nodes: list[Node]
    base: Path
    removed: bool = field(default=False)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @classmethod
    def start(cls, size: int = 1, base: Path | None = None, label: str | None = None) -> "Cluster":
        why = available()
        if why:
            raise NodeFailed(why)
        base = base or Path(tempfile.mkdtemp(prefix="seteli-rabbit-"))
        os.chmod(base, 0o755)  # mkdtemp's 0700 would keep the rabbitmq user out of its nodes' directories
        label = label or f"x{os.getpid()}"
        nodes = [Node(f"{PREFIX}{i + 1}{label}", free_port(top_down=True), free_port(top_down=True), base / f"node{i + 1}")
                 for i in range(size)]
        cluster = cls(nodes, base)
        try:
            for node in nodes:
                node.start()
            for node in nodes[1:]:
                node.stop_app()
                node.ctl("reset")
                node.ctl("join_cluster", nodes[0].nodename)
                node.start_app()
        except BaseException:
            cluster.remove()
            raise
        return cluster

    def remove(self) -> None:
        """Halt every node and delete its files."""
        if self.removed:
            return
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        self.removed = True


def leftovers() -> list[str]:
    """Node names of ours that epmd still knows (a test killed before it removed its nodes)."""
    out = subprocess.run(["epmd", "-names"], capture_output=True, text=True)
    names = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "name" and parts[1].startswith(PREFIX):
            names.append(parts[1])
    return names
