"""Swagger UI at `/docs` and ReDoc at `/redoc`, served from this app, with no CDN.

FastAPI's own pages load their JavaScript from a CDN, which a self-hosted server on a closed
network cannot reach. The `fastapi-offline` package ships the same swagger-ui 5 and ReDoc
bundles; we serve them under a path that carries the package's version, so browsers may
cache them for good and an upgrade changes the URL.
"""

from __future__ import annotations

from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from ainfinity.api.page_security import content_security_policy, inline_script_hashes, page_headers
from ainfinity.api.static_assets import IMMUTABLE, CachedStaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
_BUNDLE_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS_PREFIX = f"/docs/assets/{version('fastapi-offline')}"

# The default points an `<img>` at swagger.io's online validator: an outside request.
_SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": False}


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets; the app must be built with `docs_url=None`
    and `redoc_url=None` so FastAPI's CDN pages are not registered too."""
    app.mount(
        ASSETS_PREFIX,
        CachedStaticFiles(directory=_BUNDLE_DIR, cache_control=IMMUTABLE),
        name="docs-assets",
    )

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )
        html = bytes(page.body).decode()
        csp = content_security_policy(script_hashes=inline_script_hashes(html))
        return HTMLResponse(html, headers=page_headers(csp))

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
        html = bytes(page.body).decode()
        # ReDoc's styled-components inject <style> elements and it searches in a worker.
        csp = content_security_policy(
            script_hashes=inline_script_hashes(html), inline_styles=True, workers=True
        )
        return HTMLResponse(html, headers=page_headers(csp))
