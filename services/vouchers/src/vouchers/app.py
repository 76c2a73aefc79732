from pathlib import Path

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from .api import router
from .decisions import DECISIONS_CONSUMER
from .formulas_api import router as formulas_router
from .handlers import HANDLERS
from .lifecycle_api import router as life_cycle_router
from .settings import VouchersSettings
from .usage import BATCH_HANDLERS

SPEC = ServiceSpec(
    name="vouchers",
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router, formulas_router, life_cycle_router],
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,  # payments' charge events, a run at a time (usage.py)
    extra_consumers=[DECISIONS_CONSUMER],  # service decisions from funders' case systems (decisions.py)
    title="seteli vouchers",
    description="Service decisions, vouchers and their life cycle, the client's choice of provider.",
)


def create_app(settings: VouchersSettings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or VouchersSettings())
