"""Every request body of every service is a ``RequestModel``: unknown fields are refused (422), never
silently dropped, and text is stripped before it is validated. Found from the apps' routes, so a
new endpoint cannot escape it."""
from __future__ import annotations

import typing

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from seteli_shared.manifest import SERVICES
from seteli_shared.schemas import RequestModel


def _models(annotation) -> list[type[BaseModel]]:  # noqa: ANN001
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _bodies(app) -> list[tuple[str, type[BaseModel]]]:  # noqa: ANN001
    out = []
    routes = []
    for r in app.routes:
        if isinstance(r, APIRoute):
            routes.append(r)
        elif hasattr(r, "effective_candidates"):  # an included router (FastAPI >= 0.160)
            found = r.effective_candidates
            routes += list(found() if callable(found) else found)
    for route in routes:
        if getattr(route, "body_field", None) is not None:
            for field in route.dependant.body_params:
                out += [(f"{sorted(route.methods)} {route.path}", m) for m in _models(field.field_info.annotation)]
    return out


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_request_body_refuses_unknown_fields_and_strips_text(service):  # noqa: ANN001
    import importlib

    app = importlib.import_module(f"{service.name}.app").create_app()
    bodies = _bodies(app)
    for where, model in bodies:
        assert issubclass(model, RequestModel), f"{service.name} {where}: {model.__name__} is not a RequestModel"
        assert model.model_config.get("extra") == "forbid"
        assert model.model_config.get("str_strip_whitespace") is True
    if service.name != "reporting":
        assert bodies, f"{service.name} takes no request body at all?"
