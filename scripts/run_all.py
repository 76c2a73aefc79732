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
    """One whole line, never interleaved with the services' output."""
    stream = sys.stderr if err else sys.stdout
    with _OUTPUT:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


class Refusal(Exception):
    """Something keeps the system from starting; ``str()`` is the one line to print."""


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen
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
        return f"{self.name} stopped ({how})" + (f": {reason}" if reason else " without a word")


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


def pump(child: Child, stream) -> None:  # noqa: ANN001
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        child.note(line)
        say(f"{child.name:<10}| {line}")


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


def start(name: str, host: str, port: int, wanted: dict[str, int] | None = None) -> Child:
    env = environment(name, host, port, wanted)
    command = Path(sys.executable).parent / f"seteli-{name}"
    process = subprocess.Popen([str(command), "serve", "--host", host, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    child = Child(name, port, process)
    child.pump = threading.Thread(target=pump, args=(child, process.stdout), daemon=True)
    child.pump.start()
    return child


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
        check_ports(host, wanted)
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
    children = [start(name, host, port, wanted) for name, port in wanted.items()]
    say("seteli is starting: " + ", ".join(f"{c.name} :{c.port}" for c in children))
    ready_timeout = float(os.environ.get("SETELI_READY_TIMEOUT", "120"))
    started_at = time.monotonic()
    announced = warned = False
    failed: Child | None = None
    while not stopping.is_set():
        dead = [c for c in children if c.process.poll() is not None]
        if dead:
            failed = dead[0]
            break
        if not announced:
            for c in children:
                if not c.ready:
                    c.ready = is_ready(shown, c.port)
            if all(c.ready for c in children):
                announced = True
                say("seteli is ready: " + ", ".join(f"{c.name} {address(shown, c.name, c.port)}" for c in children))
            elif not warned and time.monotonic() - started_at > ready_timeout:
                warned = True
                waiting = ", ".join(f"{c.name} (http://{shown}:{c.port}/health/ready)" for c in children
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
