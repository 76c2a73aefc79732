"""Interactive API documentation served by the service itself, so that ``/docs`` works offline.

FastAPI's default ``/docs`` page loads Swagger UI from a CDN; without the internet it is blank.
``install_docs`` serves the Swagger UI assets of the ``swagger-ui-bundle`` package under
``/docs/assets`` and a ``/docs`` page (and its OAuth2 redirect page) that refer only to them.

The pages are plain Starlette routes, not API routes: they are not operations of the API, stay out
of the OpenAPI document and out of the route matrix that checks every operation's access policy.
Create the app with ``FastAPI(docs_url=None, redoc_url=None)`` and call ``install_docs(app)``.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
OAUTH2_REDIRECT_PATH = f"{DOCS_PATH}/oauth2-redirect"


def install_docs(app: FastAPI, path: str = DOCS_PATH) -> None:
    """Serve Swagger UI at ``path`` with its assets from this service (``<path>/assets``)."""
    assets = f"{path}/assets"
    redirect = f"{path}/oauth2-redirect"
    app.mount(assets, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API documentation",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{redirect}",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters={"persistAuthorization": True, **(app.swagger_ui_parameters or {})},
        )

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(path, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_route(redirect, oauth2_redirect, methods=["GET"], include_in_schema=False)
