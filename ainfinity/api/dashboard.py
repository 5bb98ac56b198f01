"""The web dashboard at `/dashboard`: a static page whose script talks to `/api/v1` (and to
`/v1` for chat).

The page holds no data, so it is served without a key; the browser asks for the key in a
login form and sends it with every API call. Asset URLs carry a digest of the assets'
content, so browsers cache them for good and a new release is fetched at once; the page
itself is always revalidated.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ainfinity.api.page_security import content_security_policy, page_headers
from ainfinity.api.static_assets import IMMUTABLE, CachedStaticFiles

DASHBOARD_URL = "/dashboard"
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
_ASSETS_DIR = DASHBOARD_DIR / "assets"
# Placeholders in index.html, filled per request (the root path may differ per proxy).
_ASSETS_MARK = "{{assets}}"
_API_MARK = "{{api}}"
_OPENAI_MARK = "{{openai}}"


def assets_digest() -> str:
    """A short digest of every asset's name and bytes: it changes whenever one does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in _ASSETS_DIR.rglob("*") if p.is_file()):
        digest.update(path.relative_to(_ASSETS_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def _index_template() -> str:
    return (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")


def install_dashboard(app: FastAPI) -> None:
    """Serve the page at `/dashboard` and its assets under `/dashboard/assets/<digest>/`."""
    assets_prefix = f"{DASHBOARD_URL}/assets/{assets_digest()}"
    app.mount(
        assets_prefix,
        CachedStaticFiles(directory=_ASSETS_DIR, cache_control=IMMUTABLE),
        name="dashboard-assets",
    )
    csp = content_security_policy()

    @app.get(DASHBOARD_URL, include_in_schema=False)
    async def dashboard(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = (
            _index_template()
            .replace(_ASSETS_MARK, f"{root}{assets_prefix}")
            .replace(_API_MARK, f"{root}/api/v1")
            .replace(_OPENAI_MARK, f"{root}/v1")
        )
        return HTMLResponse(html, headers=page_headers(csp))
