"""``seteli-<service> serve|migrate``: the same entry point for every service."""
from __future__ import annotations

import argparse
from typing import Callable

from .db import upgrade
from .service import ServiceSpec
from .settings import ServiceSettings


def service_main(spec: ServiceSpec, settings_factory: Callable[[], ServiceSettings], app_path: str,
                 default_port: int) -> None:
    parser = argparse.ArgumentParser(prog=f"seteli-{spec.name}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API, its consumers and its outbox relay")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=default_port)
    sub.add_parser("migrate", help="apply the database migrations and exit")
    args = parser.parse_args()
    settings = settings_factory()
    if args.command == "migrate":
        upgrade(spec.migrations_dir, settings.database_url)
        print(f"{spec.name}: database at head")
        return
    import uvicorn

    uvicorn.run(app_path, factory=True, host=args.host, port=args.port, log_level="warning", access_log=False)
