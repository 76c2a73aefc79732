"""Start the whole system on this machine (`make run`): the services of `seteli_shared.manifest`, each
with its consumers and outbox relay, on embedded SQLite databases (under ./var, or DATA_DIR) unless
DATABASE_URL_<SERVICE> says otherwise, and the RabbitMQ at AMQP_URL (default the local one).

Before starting anything it checks that every port is free and that the broker answers and accepts
the login; when not, it says so in one line and exits 1. When every service answers /health/ready it
prints one line with their addresses. When a service dies it names it and why, stops the others and
exits 1. Ctrl-C (or SIGTERM) stops them all and exits 0.

Environment: AMQP_URL, DATA_DIR, HOST (default 127.0.0.1), DATABASE_URL_<SERVICE>, PORT_<SERVICE>
(e.g. PORT_REGISTRY=9001), SETELI_PORT_BASE (ports base+1, base+2, ... in the manifest's order;
default: the manifest's ports 8001-8005), SETELI_READY_TIMEOUT (seconds, default 120),
TRUSTED_PROXIES_<SERVICE> (default: the vouchers service believes the portal's X-Forwarded-For, no
one else anybody's). The web portal (a front end of the manifest, port 8005; its sessions in
DATA_DIR/portal.db or DATABASE_URL_PORTAL) starts last, pointed at the services' ports; the ready line
gives its address (the services' with /docs).

SCALE=N (`N=2 make scale`, or `make run SCALE=2`) starts N instances of every service and of the portal,
each on a port of its own, behind a small TCP load balancer (scripts/balancer.py) on the usual ports: the
first instance of each migrates its database and becomes ready before the others start. On SQLite only the
first instance of a service runs its outbox relay (SQLite takes one relay per database); with
DATABASE_URL_<SERVICE> on PostgreSQL every instance runs one (they claim rows FOR UPDATE SKIP LOCKED).

PROMETHEUS=1 (`PROMETHEUS=1 make run`) also starts a Prometheus of its own (Debian's package: /usr/bin/prometheus,
or PROMETHEUS_BIN) on PROMETHEUS_PORT (default 9090), its data under DATA_DIR/prometheus: it scrapes every
instance's /metrics every 15 s, each target labelled with its ``service``, and evaluates the alerting rules of
deploy/monitoring/rules.yml (its alerts page: http://127.0.0.1:9090/alerts).
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from seteli_shared.bus import BrokerUnavailable, check_broker
from seteli_shared.manifest import BY_NAME, EVERYTHING, SERVICES

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Refused|Unavailable|Unreachable|Exit)\w*)(: .*)?$")


_OUTPUT = threading.Lock()


def say(text: str, *, err: bool = False) -> None:
    """One whole line (or several), never interleaved with the services' output."""
    stream = sys.stderr if err else sys.stdout
    with _OUTPUT:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


#: what a JSON line's text must hold (in lower case) for ``Child.note`` to find anything in it: its event
#: ``service.cannot_start`` or a level of error, critical or exception; other lines (a request's, every info
#: line) are not parsed
_NOTEWORTHY = ("cannot_start", "error", "critical", "exception")


class Refusal(Exception):
    """Something keeps the system from starting; ``str()`` is the one line to print."""


@dataclass
class Child:
    name: str  # the service (or "balancer"); ``label`` tells its instances apart
    port: int
    process: subprocess.Popen
    label: str = ""
    pump: threading.Thread | None = None
    ready: bool = False
    # what the service said last that may explain why it stopped
    cannot_start: str | None = None
    last_exception: str | None = None
    last_error: str | None = None
    last_line: str | None = None
    lines: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        self.last_line = text
        if text.startswith("{"):
            lowered = text.lower()
            if not any(word in lowered for word in _NOTEWORTHY):
                return  # as a JSON object it names no failure; as anything else it is no exception line
            try:
                entry = json.loads(text)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                if entry.get("event") == "service.cannot_start" and entry.get("error"):
                    self.cannot_start = str(entry["error"])
                elif str(entry.get("level", "")).lower() in ("error", "critical", "exception"):
                    why = entry.get("error") or entry.get("message") or entry.get("reason") or ""
                    exc = str(entry.get("exception") or "").strip().splitlines()
                    self.last_error = " ".join(str(x) for x in (entry.get("event"), why, exc[-1] if exc else "") if x)
                return
        if EXCEPTION_LINE.match(text):
            self.last_exception = text
        elif text.startswith(("ERROR", "CRITICAL")) and "Application startup failed" not in text:
            self.last_error = text

    def why_it_stopped(self) -> str:
        code = self.process.returncode
        how = f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"
        if self.cannot_start:
            return self.cannot_start
        reason = self.last_exception or self.last_error or self.last_line
        return f"{self.label or self.name} stopped ({how})" + (f": {reason}" if reason else " without a word")


def ports() -> dict[str, int]:
    base = os.environ.get("SETELI_PORT_BASE")
    out = {}
    for i, svc in enumerate(EVERYTHING, start=1):
        port = int(base) + i if base else svc.port
        out[svc.name] = int(os.environ.get(f"PORT_{svc.name.upper()}", port))
    return out


def check_ports(host: str, wanted: dict[str, int]) -> None:
    for name, port in wanted.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the service binds: TIME_WAIT is no obstacle
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise Refusal(f"{name} cannot start: port {port} is already in use") from None
                raise Refusal(f"{name} cannot start: cannot listen on {host}:{port} ({exc.strerror})") from None


def check_amqp(url: str) -> None:
    try:
        asyncio.run(check_broker(url))
    except BrokerUnavailable as exc:
        raise Refusal(str(exc)) from None


#: after a read that found little in the pipe, the pump waits this long before the next, so that a busy service's
#: lines (a request's each) are read, noted and printed many at a time: a wake-up, a read and a write a line cost
#: ~40 us of CPU each at a thousand lines a second, about 4 % of a single charge's (bench/README.md)
PUMP_LINGER_SECONDS = 0.02
#: a read this large is followed by the next at once (the pipe is filling: never make the service wait to write)
PUMP_BUSY_BYTES = 16384
#: the pipe's room asked for (Linux; 64 KiB by default), so that a service writing while the pump lingers finds room
PIPE_BYTES = 1 << 20


def _roomy(stream) -> None:  # noqa: ANN001
    """Ask for a larger pipe (``PIPE_BYTES``) where the system allows it; else keep the default."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError, ValueError, AttributeError):
        pass


def pump(child: Child, stream) -> None:  # noqa: ANN001
    """The child's lines as they come, each noted and printed with the child's name: what the pipe holds is read
    at once (``read1``), and its whole lines printed in one write; after a small read the pump lingers
    ``PUMP_LINGER_SECONDS`` (a line is printed at most that much later); a line's last part waits for its end."""
    prefix = f"{child.label or child.name:<10}| "
    read = getattr(stream, "read1", None) or stream.readline
    _roomy(stream)
    rest = b""
    while True:
        chunk = read(1 << 20)
        if not chunk:
            break
        if len(chunk) < PUMP_BUSY_BYTES:
            time.sleep(PUMP_LINGER_SECONDS)
        *lines, rest = (rest + chunk).split(b"\n")
        if lines:
            texts = [raw.decode(errors="replace") + "\n" for raw in lines]
            for line in texts:
                child.note(line)
            say("".join(prefix + line for line in texts))
    if rest:  # the last line, without its end
        line = rest.decode(errors="replace")
        child.note(line)
        say(prefix + line)


def is_ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def address(host: str, name: str, port: int) -> str:
    """Where a person opens it: a service's API documentation, the portal's front page."""
    return f"http://{host}:{port}" + ("/" if BY_NAME[name].kind == "frontend" else "/docs")


def environment(name: str, host: str, port: int, wanted: dict[str, int] | None = None) -> dict[str, str]:
    """What one child is started with: this environment, DATA_DIR, its own DATABASE_URL_<NAME> and
    TRUSTED_PROXIES_<NAME> as DATABASE_URL and TRUSTED_PROXIES; the portal the services' addresses."""
    env = dict(os.environ, DATA_DIR=os.environ.get("DATA_DIR", str(ROOT / "var")), PYTHONUNBUFFERED="1")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if BY_NAME[name].kind == "frontend":  # it calls the services on the ports they were given here
        for svc in SERVICES:
            env.setdefault(f"{svc.name.upper()}_URL", f"http://{shown}:{(wanted or {})[svc.name]}")
        env.setdefault("PORTAL_URL", f"http://{shown}:{port}")
        env.setdefault("AMQP_URL", DEFAULT_AMQP_URL)  # the operator's count of dead-lettered messages
    own_db = os.environ.get(f"DATABASE_URL_{name.upper()}")
    if own_db:
        env["DATABASE_URL"] = own_db
    # whose X-Forwarded-For a child believes is its own affair: the vouchers service the portal's (which
    # calls it from the address it calls it at), nobody else anyone's unless told
    env["TRUSTED_PROXIES"] = os.environ.get(f"TRUSTED_PROXIES_{name.upper()}", shown if name == "vouchers" else "")
    return env


def start(name: str, host: str, port: int, wanted: dict[str, int] | None = None, *, instance: int = 0,
          extra: dict[str, str] | None = None) -> Child:
    """Start one service (``instance``: its number among several, 0 when it runs alone)."""
    env = {**environment(name, host, port, wanted), **(extra or {})}
    command = Path(sys.executable).parent / f"seteli-{name}"
    process = subprocess.Popen([str(command), "serve", "--host", host, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    child = Child(name, port, process, label=f"{name}#{instance}" if instance else "")
    child.pump = threading.Thread(target=pump, args=(child, process.stdout), daemon=True)
    child.pump.start()
    return child


# ------------------------------------------------------------------ a local Prometheus (PROMETHEUS=1)
RULES = ROOT / "deploy" / "monitoring" / "rules.yml"


def prometheus_wanted() -> tuple[str, int] | None:
    """(the prometheus binary, its port) when PROMETHEUS=1 asks for one; a Refusal when it cannot start."""
    if os.environ.get("PROMETHEUS", "") in ("", "0"):
        return None
    binary = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        raise Refusal("PROMETHEUS=1 but there is no prometheus to start: apt-get install prometheus "
                      "(or set PROMETHEUS_BIN)")
    return binary, int(os.environ.get("PROMETHEUS_PORT", "9090"))


def prometheus_config(targets: list[tuple[str, str, str]], rules: Path = RULES, interval: str = "15s") -> str:
    """The configuration of the local Prometheus: one scrape job over every (service, instance label, address)."""
    lines = ["# written by scripts/run_all.py (PROMETHEUS=1): the running instances, each labelled with its service",
             "global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}",
             "rule_files:", f"  - {json.dumps(str(rules))}", "scrape_configs:", "  - job_name: seteli",
             "    metrics_path: /metrics", "    static_configs:"]
    for service, label, address in targets:
        lines += [f"      - targets: [{json.dumps(address)}]",
                  f"        labels: {{service: {json.dumps(service)}, seteli_instance: {json.dumps(label)}}}"]
    return "\n".join(lines) + "\n"


def start_prometheus(binary: str, port: int, host: str, served: list["Child"]) -> Child:
    data = Path(os.environ.get("DATA_DIR", str(ROOT / "var"))) / "prometheus"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "prometheus.yml"
    config.write_text(prometheus_config([(c.name, c.label or c.name, f"{host}:{c.port}") for c in served]))
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data / 'data'}",
                                f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=7d"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    child = Child("prometheus", port, process)
    child.pump = threading.Thread(target=pump, args=(child, process.stdout), daemon=True)
    child.pump.start()
    return child


# ------------------------------------------------------------------ several instances (SCALE=N)
def scale() -> int:
    text = os.environ.get("SCALE", "1") or "1"
    if not text.isdigit() or not 1 <= int(text) <= 8:
        raise Refusal(f"SCALE must be a number of instances from 1 to 8, not '{text}'")
    return int(text)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def on_sqlite(name: str) -> bool:
    return not os.environ.get(f"DATABASE_URL_{name.upper()}", "").startswith("postgresql")


def start_balancer(host: str, shown: str, wanted: dict[str, int], inner: dict[str, list[int]]) -> Child:
    """The balancer on the usual ports (``host``), in front of the instances (on ``shown``)."""
    routes = [f"{host}:{wanted[name]}=" + ",".join(f"{shown}:{p}" for p in ports_) for name, ports_ in inner.items()]
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "balancer.py"), *routes],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    child = Child("balancer", 0, process)
    child.pump = threading.Thread(target=pump, args=(child, process.stdout), daemon=True)
    child.pump.start()
    return child


def later_instance(name: str) -> dict[str, str]:
    """What an instance after the first is started with: the first has migrated the database; on SQLite the
    first runs the one relay the database takes."""
    extra = {"MIGRATE_ON_START": "false"}
    if on_sqlite(name) and BY_NAME[name].kind == "service":
        extra["RELAY"] = "off"
    return extra


def wait_ready(children: list["Child"], host: str, stopping: threading.Event, timeout: float) -> "Child | None":
    """Wait until every child answers ready; the first child that dies instead, if any."""
    deadline = time.monotonic() + timeout
    while not stopping.is_set() and time.monotonic() < deadline:
        for c in children:
            if c.process.poll() is not None:
                return c
            if not c.ready:
                c.ready = is_ready(host, c.port)
        if all(c.ready for c in children):
            return None
        stopping.wait(0.5)
    return None


def start_scaled(host: str, shown: str, wanted: dict[str, int], n: int, stopping: threading.Event,
                 ready_timeout: float) -> tuple[list["Child"], "Child | None"]:
    """N instances of everything behind the balancer: the first of each (which migrates) first."""
    inner = {name: [free_port(shown) for _ in range(n)] for name in wanted}
    children = [start_balancer(host, shown, wanted, inner)]
    first = [start(name, shown, inner[name][0], wanted, instance=1) for name in wanted]
    children += first
    say(f"seteli is starting {n} instances of each: " + ", ".join(f"{name} :{port}" for name, port in wanted.items()))
    dead = wait_ready(first, shown, stopping, ready_timeout)
    if dead is not None or stopping.is_set():
        return children, dead
    for i in range(1, n):
        children += [start(name, shown, inner[name][i], wanted, instance=i + 1, extra=later_instance(name))
                     for name in wanted]
    return children, None


def stop_all(children: list[Child]) -> None:
    for c in children:
        if c.process.poll() is None:
            c.process.terminate()
    deadline = time.monotonic() + 10
    for c in children:
        try:
            c.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.process.kill()
            c.process.wait()
    for c in children:
        if c.pump:
            c.pump.join(2)


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    amqp = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    wanted = ports()
    try:
        instances = scale()
        prometheus = prometheus_wanted()
        check_ports(host, {**wanted, **({"prometheus": prometheus[1]} if prometheus else {})})
        check_amqp(amqp)
    except Refusal as refusal:
        say(str(refusal), err=True)
        return 1

    stopping = threading.Event()

    def on_signal(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    ready_timeout = float(os.environ.get("SETELI_READY_TIMEOUT", "120"))
    failed: Child | None = None
    if instances == 1:
        children = [start(name, host, port, wanted) for name, port in wanted.items()]
        say("seteli is starting: " + ", ".join(f"{c.name} :{c.port}" for c in children))
    else:
        children, failed = start_scaled(host, shown, wanted, instances, stopping, ready_timeout)
    served = [c for c in children if c.name != "balancer"]
    if prometheus is not None and failed is None:
        children.append(start_prometheus(*prometheus, shown, served))
    started_at = time.monotonic()
    announced = warned = False
    while not stopping.is_set() and failed is None:
        dead = [c for c in children if c.process.poll() is not None]
        if dead:
            failed = dead[0]
            break
        if not announced:
            for c in served:
                if not c.ready:
                    c.ready = is_ready(shown, c.port)
            if all(c.ready for c in served):
                announced = True
                each = f" ({instances} instances each behind a balancer)" if instances > 1 else ""
                watched = f"; prometheus http://{shown}:{prometheus[1]}/alerts" if prometheus else ""
                say("seteli is ready: " + ", ".join(f"{name} {address(shown, name, port)}"
                                                    for name, port in wanted.items()) + each + watched)
            elif not warned and time.monotonic() - started_at > ready_timeout:
                warned = True
                waiting = ", ".join(f"{c.label or c.name} (http://{shown}:{c.port}/health/ready)" for c in served
                                    if not c.ready)
                say(f"seteli is still not ready after {ready_timeout:.0f} s: waiting for {waiting}", err=True)
        stopping.wait(0.5)

    if failed is not None:
        if failed.pump:
            failed.pump.join(3)  # let its last words arrive
        stop_all(children)
        say(failed.why_it_stopped() + "; stopped the others", err=True)
        return 1
    stop_all(children)
    say("seteli stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
