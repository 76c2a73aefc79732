"""`seteli-<service> serve` that cannot start says why in one line and exits non-zero, no traceback:
the broker is not reachable, the broker refuses the login, the port is taken."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from seteli_shared.bus import BrokerLoginRefused, BrokerUnreachable, check_broker
from seteli_shared.ports import free_port

BIN = Path(sys.executable).parent
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_up() -> bool:
    u = urlparse(AMQP_URL)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def with_password(url: str, password: str) -> str:
    u = urlparse(url)
    return u._replace(netloc=f"{u.username or 'guest'}:{password}@{u.hostname}:{u.port or 5672}").geturl()


def serve(tmp_path: Path, port: int, **env: str) -> tuple[int, list[str]]:
    r = subprocess.run([str(BIN / "seteli-registry"), "serve", "--port", str(port)], capture_output=True,
                       text=True, timeout=60,
                       env={**os.environ, "DATA_DIR": str(tmp_path), "BUS_NAMESPACE": "serve-refusals", **env})
    output = r.stdout + r.stderr
    assert "Traceback" not in output, output
    return r.returncode, [line for line in output.splitlines() if line.strip()]


def the_refusal(lines: list[str]) -> dict:
    errors = [json.loads(line) for line in lines if line.startswith("{") and '"error"' in line]
    assert len(errors) == 1, lines
    assert errors[0]["event"] == "service.cannot_start"
    assert not [line for line in lines if not line.startswith("{")], lines  # nothing but JSON lines
    return errors[0]


def test_an_unreachable_broker_is_one_line(tmp_path):  # noqa: ANN001
    code, lines = serve(tmp_path, free_port(), AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert code == 1
    line = the_refusal(lines)
    assert line["reason"] == "broker_unreachable"
    assert line["error"].startswith("registry cannot start: RabbitMQ is not reachable at 127.0.0.1:")
    assert "rabbitmq-server -detached" in line["error"]


@pytest.mark.skipif(not broker_up(), reason="needs the local RabbitMQ")
def test_a_refused_login_is_one_line_and_keeps_the_password_secret(tmp_path):  # noqa: ANN001
    code, lines = serve(tmp_path, free_port(), AMQP_URL=with_password(AMQP_URL, "not-the-password"))
    assert code == 1
    line = the_refusal(lines)
    assert line["reason"] == "broker_login_refused"
    assert "refused the login for user" in line["error"] and "check AMQP_URL" in line["error"]
    assert "not-the-password" not in "\n".join(lines)


def test_a_port_in_use_is_one_line(tmp_path):  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, lines = serve(tmp_path, port)
    assert code == 1
    line = the_refusal(lines)
    assert line == {**line, "reason": "port_in_use", "error": f"registry cannot start: port {port} is already in use"}


async def test_check_broker_tells_the_two_apart():
    with pytest.raises(BrokerUnreachable, match="not reachable"):
        await check_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    if broker_up():
        with pytest.raises(BrokerLoginRefused, match="refused the login for user 'guest'"):
            await check_broker(with_password(AMQP_URL, "wrong"))
        await check_broker(AMQP_URL)


def test_the_listening_socket_lets_asyncio_set_tcp_nodelay():
    import socket

    from seteli_shared.cli import bind_port

    sock = bind_port("registry", "127.0.0.1", 0)
    try:
        # asyncio sets TCP_NODELAY on accepted connections only for sockets made with IPPROTO_TCP
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
