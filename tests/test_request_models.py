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


# ------------------------------------------------------------------ numbers and dates, strictly
def _loose(annotation, metadata: list, where: str, seen: set) -> list[str]:  # noqa: ANN001
    """Where a number or date of this annotation is read without the shared strict types."""
    from datetime import date, datetime
    from decimal import Decimal

    from seteli_shared.schemas import _Strictly

    if any(isinstance(m, _Strictly) for m in metadata):
        return []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *more = typing.get_args(annotation)
        return _loose(inner, [*more, *metadata], where, seen)
    if origin is not None:  # Optional, unions, lists, dicts: every part
        return [x for arg in typing.get_args(annotation) for x in _loose(arg, metadata, where, seen)]
    if annotation in (int, float, Decimal, date, datetime):
        return [where]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        seen.add(annotation)
        return [x for name, f in annotation.model_fields.items()
                for x in _loose(f.annotation, list(f.metadata), f"{where}.{name}", seen)]
    return []


def _params(dependant, where: str) -> list[tuple[str, object, list]]:  # noqa: ANN001
    out = []
    for kind in ("path_params", "query_params", "header_params", "cookie_params", "body_params"):
        for p in getattr(dependant, kind, []):
            out.append((f"{where} {kind[:-7]} {p.name}", p.field_info.annotation, list(p.field_info.metadata)))
    for sub in dependant.dependencies:
        out += _params(sub, where)
    return out


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_number_and_date_a_request_takes_is_read_by_the_shared_strict_types(service):  # noqa: ANN001
    """Units, amounts, cents, rates, counts and dates in every body (at any depth) and every path, query and
    header parameter are ``seteli_shared.schemas`` types (``Units``, ``Cents``, ``Count``, ``BusinessDate``...):
    no ``int``, ``Decimal``, ``float`` or ``date`` that pydantic would read loosely (``"1_0"``, ``"１０"``,
    ``0001-01-01``)."""
    import importlib

    app = importlib.import_module(f"{service.name}.app").create_app()
    routes = []
    for r in app.routes:
        if isinstance(r, APIRoute):
            routes.append(r)
        elif hasattr(r, "effective_candidates"):
            found = r.effective_candidates
            routes += list(found() if callable(found) else found)
    loose, seen = [], set()
    for route in routes:
        for where, annotation, metadata in _params(route.dependant, f"{sorted(route.methods)} {route.path}"):
            loose += _loose(annotation, metadata, where, seen)
    assert loose == [], f"{service.name}: numbers or dates read loosely: {loose}"
