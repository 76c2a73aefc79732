"""`seteli-<service> serve` runs the service on the event loop uvicorn picks (``loop="auto"``: uvloop where it is
installed, as the `uvicorn` command does), not on asyncio's own loop."""
from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest
import uvicorn

from seteli_shared import cli


def test_serve_runs_the_app_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    loops = []

    async def serve(self, sockets=None) -> None:  # noqa: ANN001
        loops.append(asyncio.get_running_loop())
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(cli, "bind_port", lambda *a: socket.socket())
    monkeypatch.setattr(cli, "_load_app", lambda path: object())
    monkeypatch.setattr(cli, "_guard_startup", lambda *a: None)
    settings = SimpleNamespace(service_name="registry", log_level="warning", log_json=True)
    assert cli.serve(SimpleNamespace(name="registry"), settings, "x:y", "127.0.0.1", 0) == 0
    assert len(loops) == 1 and isinstance(loops[0], uvloop.Loop)
