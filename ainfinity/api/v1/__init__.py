"""Version 1 of the API, mounted at `/api/v1`, every route behind an API key."""

from fastapi import APIRouter, Security

from ainfinity.api.v1 import deployments, jobs, models, serving, streams, usage
from ainfinity.middleware.auth import require_api_key
from ainfinity.schema.error import ErrorResponse

api_router = APIRouter(
    prefix="/api/v1",
    dependencies=[Security(require_api_key)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
        422: {"model": ErrorResponse, "description": "Invalid request"},
        429: {"model": ErrorResponse, "description": "Rate limited"},
    },
)
api_router.include_router(jobs.router)
api_router.include_router(streams.router)
api_router.include_router(models.router)
api_router.include_router(serving.router)
api_router.include_router(deployments.router)
api_router.include_router(usage.router)
