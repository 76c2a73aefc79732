import gc
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from . import metrics as reporting_metrics
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
    app = create_service_app(SPEC, settings or ReportingSettings())
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        """Once started, what the start made is set aside from the collector's full passes
        (``gc.freeze``): a report allocates a great many short-lived objects, and every full pass over
        the libraries' own objects added 50-100 ms to one report in twenty (bench/README.md)."""
        async with inner(app_) as state:
            reporting_metrics.install(app_.state.metrics, app_.state.runtime.sessions)
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app
