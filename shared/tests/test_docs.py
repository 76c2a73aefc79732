"""`/docs` works offline: the page and every script, style and icon it needs come from the service."""
from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from seteli_shared.docs import install_docs
from seteli_shared.service import ServiceSpec, create_service_app
from seteli_shared.settings import ServiceSettings

ASSET_REF = re.compile(r"""<(?:script|link)[^>]*?(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)
CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",)}


def service_app(tmp_path: Path) -> FastAPI:
    spec = ServiceSpec(name="docs-test", migrations_dir=tmp_path, routers=[])
    return create_service_app(spec, ServiceSettings(service_name="docs-test", data_dir=tmp_path))


async def fetch_docs_and_assets(app: FastAPI, prefix: str = "") -> list[str]:
    # no lifespan: the page and its assets need no database or broker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        page = await client.get(f"{prefix}/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        refs = ASSET_REF.findall(page.text)
        assert len(refs) >= 3, page.text  # the bundle, its stylesheet, the favicon
        for ref in refs:
            assert not ref.startswith(("http://", "https://", "//")), f"/docs loads {ref} from elsewhere"
        assert "cdn.jsdelivr" not in page.text and "fastapi.tiangolo.com" not in page.text
        for ref in refs:
            r = await client.get(ref)
            assert r.status_code == 200, ref
            suffix = Path(ref).suffix
            assert r.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], (ref, r.headers)
            assert len(r.content) > 100
        assert "/openapi.json" in page.text
        redirect = await client.get(f"{prefix}/docs/oauth2-redirect")
        assert redirect.status_code == 200 and redirect.headers["content-type"].startswith("text/html")
        return refs


async def test_a_service_serves_its_docs_and_their_assets_itself(tmp_path):  # noqa: ANN001
    app = service_app(tmp_path)
    refs = await fetch_docs_and_assets(app)
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in refs)
    assert any(ref.endswith("swagger-ui.css") for ref in refs)


async def test_the_docs_are_no_api_operations(tmp_path):  # noqa: ANN001
    app = service_app(tmp_path)
    api_paths = {r.path for r in app.routes if isinstance(r, APIRoute)}
    assert not any(p.startswith("/docs") or p.startswith("/redoc") for p in api_paths)
    assert not any(p.startswith("/docs") for p in app.openapi()["paths"])


async def test_install_docs_on_a_bare_app():
    app = FastAPI(docs_url=None, redoc_url=None)
    install_docs(app)
    await fetch_docs_and_assets(app)
