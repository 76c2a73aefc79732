"""Start the whole system on this machine: the four services, each with its consumers and outbox
relay, on embedded SQLite databases (under ./var) unless DATABASE_URL_<SERVICE> says otherwise,
and the local RabbitMQ. Ctrl-C stops them all."""
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

SERVICES = {"registry": 8001, "vouchers": 8002, "payments": 8003, "reporting": 8004}
ROOT = Path(__file__).resolve().parent.parent


def broker_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def pump(name: str, stream) -> None:  # noqa: ANN001
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<10}| {line.decode(errors='replace')}")
        sys.stdout.flush()


def main() -> int:
    amqp = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if not broker_reachable(amqp):
        print(f"RabbitMQ is not reachable at {urlparse(amqp).hostname}:{urlparse(amqp).port or 5672}.\n"
              "Start it with:  rabbitmq-server -detached && rabbitmqctl await_startup\n"
              "(or point AMQP_URL at a running broker), then run this again.", file=sys.stderr)
        return 2
    bin_dir = Path(sys.executable).parent
    procs: dict[str, subprocess.Popen] = {}
    for name, port in SERVICES.items():
        env = dict(os.environ, DATA_DIR=os.environ.get("DATA_DIR", str(ROOT / "var")))
        own_db = os.environ.get(f"DATABASE_URL_{name.upper()}")
        if own_db:
            env["DATABASE_URL"] = own_db
        host = os.environ.get("HOST", "127.0.0.1")
        procs[name] = subprocess.Popen([str(bin_dir / f"seteli-{name}"), "serve", "--host", host, "--port", str(port)],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=pump, args=(name, procs[name].stdout), daemon=True).start()
    print("seteli is starting: " + ", ".join(f"{n} http://127.0.0.1:{p}/docs" for n, p in SERVICES.items()), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            for name, p in procs.items():
                if p.poll() is not None:
                    print(f"{name} exited with {p.returncode}; stopping the others", file=sys.stderr)
                    stop.set()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
