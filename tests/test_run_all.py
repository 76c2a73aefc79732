"""`make run` tells a newcomer how to start RabbitMQ when it is not reachable."""
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_says_how_to_start_rabbitmq_when_it_is_not_reachable(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_all.py")], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
                                        "DATA_DIR": str(tmp_path)})
    assert r.returncode == 2
    assert "RabbitMQ is not reachable" in r.stderr and "rabbitmq-server -detached" in r.stderr
