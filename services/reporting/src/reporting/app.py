from pathlib import Path

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from .api import router
from .handlers import BATCH_HANDLERS, archive
from .settings import ReportingSettings

SPEC = ServiceSpec(
    name="reporting",
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router],
    batch_handlers=BATCH_HANDLERS,  # folded a run at a time (handlers.fold)
    bind_keys=["#"],  # every domain event: unknown ones are archived for later read models
    fallback=archive,
    title="seteli reporting",
    description="Monitoring and statistics per funder, built only from events.",
)


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or ReportingSettings())
