import asyncio

from seteli_shared.cli import service_main
from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.settings import ServiceSettings

from .app import SPEC
from .settings import ReportingSettings


def rebuild(settings: ServiceSettings) -> int:
    """``seteli-reporting rebuild``: fold the event archive again into new read models, which then replace
the live ones (``usecases.rebuild``)."""
    from . import usecases

    async def run() -> dict:
        await upgrade_async(SPEC.migrations_dir, settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await usecases.rebuild(session_factory(engine))
        finally:
            await engine.dispose()

    done = asyncio.run(run())
    print(f"reporting: read models rebuilt from {done['events_folded']} archived events")
    return 0


def main() -> None:
    service_main(SPEC, ReportingSettings, "reporting.app:create_app", extra_commands={
        "rebuild": ("fold the archive of received events again into new read models and swap them in", rebuild)})


if __name__ == "__main__":
    main()
