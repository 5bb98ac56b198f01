"""Request metrics for Prometheus: count and latency by method, route template and status.

Labels come from the route that answered (`/api/v1/jobs/{name}`), never from the raw path,
so a client cannot create a series per job name or per probe of a random URL; requests no
route answered (404s, and 429s or 413s refused before routing) share `route="unmatched"`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ainfinity.observability.prometheus import ApiMetrics

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Pure ASGI: it only watches the response start go by."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        started = time.perf_counter()
        status = 500

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, watching_send)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.observe_request(
                method, route_template(scope), status, time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The template of the route that answered, with its routers' prefixes."""
    route = scope.get("route")
    path: str = scope.get("path", "")
    path_format = getattr(route, "path_format", None)
    if isinstance(path_format, str):
        # The route knows its own part (`/jobs/{name}`) but not the prefixes of the routers
        # it was included with: those are the part of the path before the filled-in template.
        try:
            filled = path_format.format(**scope.get("path_params", {}))
        except (KeyError, IndexError, ValueError):
            return path_format
        return path[: -len(filled)] + path_format if path.endswith(filled) else path_format
    return _plain_route(scope.get("app"), path)


def _plain_route(app: Any, path: str) -> str:
    # Routes outside FastAPI's routers (docs, openapi.json, mounted static files).
    for candidate in getattr(app, "routes", ()):
        if isinstance(candidate, Route) and candidate.path == path and "{" not in path:
            return path
        if isinstance(candidate, Mount) and path.startswith(candidate.path.rstrip("/") + "/"):
            return candidate.path.rstrip("/") + "/{path}"
    return UNMATCHED
