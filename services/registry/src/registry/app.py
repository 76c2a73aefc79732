from pathlib import Path

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from . import price_api
from .api import router
from .settings import RegistrySettings

SPEC = ServiceSpec(
    name="registry",
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router, price_api.router],
    title="seteli registry",
    description="Funders and their contract terms; providers, their approvals per funder and service category.",
)


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings or RegistrySettings())
