"""``seteli-portal serve [--host H] [--port P]``: the web portal (port from the manifest);
``seteli-portal migrate``: its session store's migrations, then exit (a deployment's migration Job, run
before the portal's pods, which then start with ``MIGRATE_ON_START=false``)."""
from __future__ import annotations

import argparse
import sys

from seteli_shared.cli import CANNOT_START, CannotStart, bind_port
from seteli_shared.logging import configure_logging, get_logger
from seteli_shared.manifest import BY_NAME

from .settings import PortalSettings

log = get_logger("portal")


def main() -> None:
    parser = argparse.ArgumentParser(prog="seteli-portal")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve the web portal")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=BY_NAME["portal"].port)
    sub.add_parser("migrate", help="apply the session store's migrations and exit")
    args = parser.parse_args()
    if args.command == "migrate":
        sys.exit(migrate())
    sys.exit(serve(args.host, args.port))


def migrate() -> int:
    from seteli_shared.db import upgrade

    from .app import MIGRATIONS

    upgrade(MIGRATIONS, PortalSettings().database_url)
    print("portal: database at head")
    return 0


def serve(host: str, port: int) -> int:
    import asyncio

    import uvicorn

    settings = PortalSettings()
    configure_logging("portal", settings.log_level, settings.log_json)
    try:
        sock = bind_port("portal", host, port)
    except CannotStart as refusal:
        log.error(CANNOT_START, reason=refusal.reason, error=refusal.error)
        return 1
    from .app import create_app

    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    main()
