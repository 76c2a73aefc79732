from pathlib import Path

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from .api import router
from . import banking_api, corrections_api, intake_api, notices, notices_api
from .handlers import HANDLERS
from .payouts import HANDLERS as PROVIDER_HANDLERS
from .settings import PaymentsSettings
from .settlement_api import router as settlement_router

SPEC = ServiceSpec(
    name="payments",
    migrations_dir=Path(__file__).parent / "migrations",
    # settlement_router first: /settlements/at-risk before /settlements/{id}
    routers=[settlement_router, router, intake_api.router, corrections_api.router, banking_api.router,
             notices_api.router],
    bulk_paths=(intake_api.BULK_PATH,),
    streamed_bodies=((intake_api.BULK_PATH, "text/csv"),),
    handlers={**HANDLERS, **PROVIDER_HANDLERS},
    readiness_details=notices.readiness_details,
    title="seteli payments",
    description="Charges, the double-entry ledger, settlements, payouts and the bank side.",
)


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or PaymentsSettings())
