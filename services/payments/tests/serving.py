"""A real ``seteli-payments serve`` process for the kill -9 tests: started on a free port, ready when it answers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from seteli_shared.ports import free_port

BIN = Path(sys.executable).parent


def start_payments(url: str, amqp_url: str, namespace: str, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """The service on ``url``'s database and the bus (``env``: more settings), and its base URL once ready."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=url, AMQP_URL=amqp_url, BUS_NAMESPACE=namespace, ENVIRONMENT="test",
               RELAY_IDLE_SECONDS="0.05", LOG_LEVEL="WARNING", **env)
    proc = subprocess.Popen([str(BIN / "seteli-payments"), "serve", "--port", str(port)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"payments did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
