"""`/metrics`: Prometheus's text exposition, outside `/api/v1` (and its rate limit).

Open by default, as scrapers hold no API key; `AINFINITY_METRICS_REQUIRE_KEY=true` puts it
behind one, like the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, Security

from ainfinity.api.dependencies import MetricsDep
from ainfinity.middleware.auth import require_api_key
from ainfinity.observability.prometheus import CONTENT_TYPE
from ainfinity.schema.error import ErrorResponse


def build_metrics_router(*, require_key: bool) -> APIRouter:
    router = APIRouter(
        tags=["operations"],
        dependencies=[Security(require_api_key)] if require_key else [],
        responses=(
            {401: {"model": ErrorResponse, "description": "Missing or wrong API key"}}
            if require_key
            else {}
        ),
    )

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus_metrics(metrics: MetricsDep) -> Response:
        """Requests by route and status, latency, jobs by status and executor, launch latency.

        With several workers under `ainfinity serve`, every worker's counts are summed."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return router
