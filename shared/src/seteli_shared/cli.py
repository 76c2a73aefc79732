"""``seteli-<service> serve|migrate|relay``: the same entry point for every service.

``serve`` binds its port before anything else and starts the app's lifespan (migrations, broker,
consumers, relay) under uvicorn. When it cannot start because the port is taken, the broker is not
reachable or refuses the login, it logs one line (JSON, event ``service.cannot_start``, with
``reason`` and ``error``) and exits 1, without a traceback. ``relay`` runs only the service's outbox
relay, for a service served with ``RELAY=off`` (``seteli_shared.relay``).
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import socket
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from .bus import BrokerUnavailable
from .db import upgrade
from .logging import configure_logging, get_logger
from .service import ServiceSpec
from .settings import ServiceSettings

log = get_logger(__name__)
CANNOT_START = "service.cannot_start"


class CannotStart(Exception):
    def __init__(self, reason: str, error: str):
        super().__init__(error)
        self.reason = reason
        self.error = error


def bind_port(name: str, host: str, port: int) -> socket.socket:
    """The listening socket, bound before the service starts anything; ``CannotStart`` if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then (else every
    # small response waits ~40 ms for Nagle and the delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotStart("port_in_use", f"{name} cannot start: port {port} is already in use") from exc
        if exc.errno == errno.EACCES:
            raise CannotStart("port_not_permitted",
                              f"{name} cannot start: no permission to listen on port {port}") from exc
        raise CannotStart("port_unavailable",
                          f"{name} cannot start: cannot listen on {host}:{port} ({exc.strerror})") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _AfterRefusal(logging.Filter):
    """Once the service has said in one line why it cannot start, uvicorn's own report of the failed
    lifespan (the traceback, "Application startup failed") adds nothing: drop it."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: CannotStart | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        return self.refused is None


def _guard_startup(app: Any, name: str, guard: _AfterRefusal) -> None:
    """Wrap the app's lifespan: a broker that is not there or refuses the login becomes one line."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        context = inner(app_)
        try:
            state = await context.__aenter__()
        except BrokerUnavailable as exc:
            guard.refused = CannotStart(exc.reason, f"{name} cannot start: {exc}")
            log.error(CANNOT_START, reason=exc.reason, error=guard.refused.error)
            raise
        try:
            yield state
        except BaseException:
            if not await context.__aexit__(*sys.exc_info()):
                raise
        else:
            await context.__aexit__(None, None, None)

    app.router.lifespan_context = lifespan


def _load_app(app_path: str) -> Any:
    module, _, attr = app_path.partition(":")
    return getattr(importlib.import_module(module), attr)()


def serve(spec: ServiceSpec, settings: ServiceSettings, app_path: str, host: str, port: int) -> int:
    import uvicorn

    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    try:
        sock = bind_port(spec.name, host, port)
    except CannotStart as refusal:
        log.error(CANNOT_START, reason=refusal.reason, error=refusal.error)
        return 1
    guard = _AfterRefusal()
    logging.getLogger("uvicorn.error").addFilter(guard)
    app = _load_app(app_path)
    _guard_startup(app, spec.name, guard)
    # proxy headers: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; seteli_shared.addresses
    # decides whom to believe (TRUSTED_PROXIES), so the peer reaches the app as the TCP peer it is
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    try:
        # ``Server.run``, not ``asyncio.run(server.serve())``: it takes the loop uvicorn's ``loop="auto"`` picks
        # (uvloop when installed, as ``uvicorn`` on the command line does); ``serve`` alone ran on asyncio's own
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits 3 itself when the lifespan fails
        if exc.code not in (None, 0):
            return 1
    finally:
        sock.close()
    if guard.refused is not None or not server.started:
        return 1
    return 0


#: a further command of one service: its help text and what it does with the settings (the exit code);
#: a third element, when there, adds the command's own options to its parser, and the command is then
#: called with the parsed arguments too
ExtraCommand = (tuple[str, Callable[..., int]]
                | tuple[str, Callable[..., int], Callable[[argparse.ArgumentParser], None]])


def service_main(spec: ServiceSpec, settings_factory: Callable[[], ServiceSettings], app_path: str,
                 default_port: int | None = None, extra_commands: dict[str, ExtraCommand] | None = None) -> None:
    """The service's command line; it serves on its port from the manifest unless told otherwise.
    ``extra_commands`` adds commands of the service's own (e.g. ``seteli-vouchers expire``), each run
    with the settings from the environment."""
    if default_port is None:
        from .manifest import BY_NAME

        default_port = BY_NAME[spec.name].port
    parser = argparse.ArgumentParser(prog=f"seteli-{spec.name}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the HTTP API, its consumers and its outbox relay (RELAY=in_process, "
                               "the default; RELAY=process: the relay as a child process; RELAY=off: none)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=default_port)
    sub.add_parser("migrate", help="apply the database migrations and exit")
    sub.add_parser("relay", help="run only the outbox relay (beside a service served with RELAY=off), until "
                   "SIGTERM or SIGINT")
    for name, (help_text, *rest) in (extra_commands or {}).items():
        command = sub.add_parser(name, help=help_text)
        if len(rest) > 1:
            rest[1](command)
    args = parser.parse_args()
    settings = settings_factory()
    if args.command in (extra_commands or {}):
        configure_logging(settings.service_name, settings.log_level, settings.log_json)
        _, run, *options = extra_commands[args.command]
        sys.exit(run(settings, args) if options else run(settings))
    if args.command == "relay":
        from .relay import run_relay

        configure_logging(settings.service_name, settings.log_level, settings.log_json)
        sys.exit(asyncio.run(run_relay(settings)))
    if args.command == "migrate":
        upgrade(spec.migrations_dir, settings.database_url, settings=settings)
        print(f"{spec.name}: database at head")
        return
    sys.exit(serve(spec, settings, app_path, args.host, args.port))
