"""`/api/v1/serving`: the inference worker, its loaded models and its counters."""

from __future__ import annotations

from fastapi import APIRouter

from ainfinity.api.dependencies import CurrentKey, ServingDep
from ainfinity.schema.error import ErrorResponse
from ainfinity.schema.model import ServingStatus, UnloadRequest, UnloadResult

router = APIRouter(prefix="/serving", tags=["serving"])


@router.get("")
async def serving_status(serving: ServingDep, key: CurrentKey) -> ServingStatus:
    """The worker: status, loaded models (yours only, for a `user` key), memory, requests
    served, tokens generated, restarts and crashes."""
    return await serving.status(caller=key)


@router.post("/unload", responses={403: {"model": ErrorResponse, "description": "Not an admin"}})
async def unload_model(body: UnloadRequest, serving: ServingDep, key: CurrentKey) -> UnloadResult:
    """Free a loaded model's memory now (admin keys only); it loads again when called."""
    return await serving.unload(body.model, caller=key)
