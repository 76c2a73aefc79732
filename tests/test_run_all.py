"""`make run` (scripts/run_all.py) as a newcomer meets it, run as a real process: it refuses in one
line what keeps the system from starting, says when the system is ready, names a service that dies,
and stops cleanly on SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from seteli_shared.manifest import EVERYTHING, NAMES
from seteli_shared.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "run_all.py"


def own_ports() -> dict[str, str]:
    """Free ports of the test's own, so that a real `make run` on this machine does not matter."""
    return {f"PORT_{s.name.upper()}": str(free_port()) for s in EVERYTHING}


def run_all(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DATA_DIR": str(tmp_path), **own_ports(), **env})


def one_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert r.stdout.strip() == "", r.stdout  # nothing was started
    return lines[0]


def with_password(url: str, password: str) -> str:
    u = urlparse(url)
    return u._replace(netloc=f"{u.username or 'guest'}:{password}@{u.hostname}:{u.port or 5672}").geturl()


def test_run_says_how_to_start_rabbitmq_when_it_is_not_reachable(tmp_path):  # noqa: ANN001
    port = free_port()  # a port nobody listens on
    r = run_all(tmp_path, AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    assert r.returncode == 1
    line = one_line(r)
    assert line == (f"RabbitMQ is not reachable at 127.0.0.1:{port} — start it with "
                    "`rabbitmq-server -detached && rabbitmqctl await_startup`")


def test_run_names_the_service_whose_port_is_taken(tmp_path, amqp_url):  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = run_all(tmp_path, AMQP_URL=amqp_url, PORT_PAYMENTS=str(port))
    assert r.returncode == 1
    assert one_line(r) == f"payments cannot start: port {port} is already in use"


def test_port_base_moves_every_port(tmp_path, amqp_url):  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, "DATA_DIR": str(tmp_path), "AMQP_URL": amqp_url, "SETELI_PORT_BASE": str(port - 1)}
        for name in NAMES:
            env.pop(f"PORT_{name.upper()}", None)
        r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1
    assert one_line(r) == f"{NAMES[0]} cannot start: port {port} is already in use"


def test_run_tells_a_refused_login_from_an_unreachable_broker(tmp_path, amqp_url):  # noqa: ANN001
    r = run_all(tmp_path, AMQP_URL=with_password(amqp_url, "certainly-wrong"))
    assert r.returncode == 1
    line = one_line(r)
    u = urlparse(amqp_url)
    assert line == (f"RabbitMQ at {u.hostname}:{u.port or 5672} refused the login for user "
                    f"'{u.username or 'guest'}' — check AMQP_URL")
    assert "certainly-wrong" not in line


class Running:
    """run_all.py as a background process whose output is collected as it comes."""

    def __init__(self, tmp_path: Path, **env: str):
        self.out: list[str] = []
        self.err: list[str] = []
        self.process = subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "DATA_DIR": str(tmp_path), **env})
        for stream, into in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=lambda s=stream, i=into: [i.append(line) for line in s], daemon=True).start()

    def wait_for(self, prefix: str, timeout: float = 90) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.out:
                if line.startswith(prefix):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line {prefix!r}; stdout:\n{''.join(self.out)}\nstderr:\n{''.join(self.err)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


async def test_run_says_once_when_the_system_is_ready_and_stops_on_sigterm(tmp_path, amqp_url, namespace):  # noqa: ANN001
    ports = own_ports()
    run = Running(tmp_path, AMQP_URL=amqp_url, BUS_NAMESPACE=namespace, **ports)
    try:
        line = run.wait_for("seteli is ready: ")
        expected = ", ".join(f"{s.name} http://127.0.0.1:{ports['PORT_' + s.name.upper()]}"
                             + ("/" if s.kind == "frontend" else "/docs") for s in EVERYTHING)
        assert line.strip() == f"seteli is ready: {expected}"
    finally:
        code = run.stop()
    assert code == 0, "".join(run.err)
    assert (tmp_path / "portal.db").is_file(), "the portal keeps its sessions under DATA_DIR"
    assert sum(line.startswith("seteli is ready") for line in run.out) == 1
    assert "Traceback" not in "".join(run.err)
    for port in ports.values():  # every service was stopped: its port is free again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # refused only while someone listens
            s.bind(("127.0.0.1", int(port)))


async def test_run_names_a_service_that_dies_and_exits_non_zero(tmp_path, amqp_url, namespace):  # noqa: ANN001
    nowhere = free_port()
    run = Running(tmp_path, AMQP_URL=amqp_url, BUS_NAMESPACE=namespace, **own_ports(),
                  DATABASE_URL_REPORTING=f"postgresql+asyncpg://nobody@127.0.0.1:{nowhere}/nothing")
    try:
        code = run.process.wait(90)
    finally:
        run.stop()
    time.sleep(0.5)  # the reader threads catch up
    assert code == 1
    said = [line for line in run.err if line.strip()]
    assert len(said) == 1, said
    assert said[0].startswith("reporting stopped (exit code 1): ")
    assert str(nowhere) in said[0]  # why: its database did not answer
    assert not any(line.startswith("seteli is ready") for line in run.out)


def test_the_vouchers_service_believes_the_portals_x_forwarded_for_and_no_child_a_strays(monkeypatch):  # noqa: ANN001
    """The portal calls the vouchers service from the address it calls it at, and passes the browser's
    address on: that address is the vouchers service's one trusted proxy. A TRUSTED_PROXIES left in the
    shell is no child's; TRUSTED_PROXIES_<NAME> gives one its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all_under_test", SCRIPT)
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, run_all)  # its dataclasses look their module up there
    spec.loader.exec_module(run_all)
    wanted = {s.name: s.port for s in EVERYTHING}
    monkeypatch.setenv("TRUSTED_PROXIES", "0.0.0.0/0")
    monkeypatch.delenv("TRUSTED_PROXIES_PORTAL", raising=False)
    monkeypatch.delenv("TRUSTED_PROXIES_VOUCHERS", raising=False)
    trusted = {s.name: run_all.environment(s.name, "0.0.0.0", s.port, wanted)["TRUSTED_PROXIES"] for s in EVERYTHING}
    assert trusted == {**{name: "" for name in wanted}, "vouchers": "127.0.0.1"}
    monkeypatch.setenv("TRUSTED_PROXIES_PORTAL", "192.0.2.0/24")
    assert run_all.environment("portal", "127.0.0.1", 8005, wanted)["TRUSTED_PROXIES"] == "192.0.2.0/24"


async def test_prometheus_1_starts_a_prometheus_that_scrapes_every_service(tmp_path, amqp_url, namespace):  # noqa: ANN001
    """`PROMETHEUS=1 make run`: a Prometheus of its own (Debian's package) scrapes every service's /metrics,
    each target labelled with its service, with the alerting rules loaded; stopped with the rest."""
    import json
    import shutil
    import urllib.request

    import pytest

    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus: apt-get install prometheus")
    port = free_port()
    run = Running(tmp_path, AMQP_URL=amqp_url, BUS_NAMESPACE=namespace, PROMETHEUS="1", PROMETHEUS_PORT=str(port),
                  **own_ports())

    def api(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as r:
            return json.load(r)["data"]

    try:
        line = run.wait_for("seteli is ready: ")
        assert line.strip().endswith(f"; prometheus http://127.0.0.1:{port}/alerts")
        end, up = time.monotonic() + 60, {}
        while time.monotonic() < end:
            up = {t["labels"]["service"]: t["health"] for t in api("targets")["activeTargets"]}
            if len(up) == len(EVERYTHING) and set(up.values()) == {"up"}:
                break
            time.sleep(1)
        assert up == {s.name: "up" for s in EVERYTHING}
        rules = {r["name"] for g in api("rules")["groups"] for r in g["rules"]}
        assert {"PaymentGuaranteeAtRisk", "DeadLettersAppearing", "ScheduledJobMissed"} <= rules
        result = api("query?query=seteli_outbox_depth")["result"]
        assert {r["metric"]["service"] for r in result} == set(NAMES)  # the portal has no outbox
    finally:
        code = run.stop()
    assert code == 0, "".join(run.err)
    with socket.socket() as s:  # Prometheus was stopped too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
