"""The OpenAI-compatible API at `/v1`: the `openai` SDK works with `base_url=.../v1` and an
ainfinity key. Same keys, ownership and rate limit as `/api/v1`; errors in OpenAI's shape."""

from fastapi import APIRouter, Security

from ainfinity.api.openai import completions, files, fine_tuning, models
from ainfinity.middleware.auth import require_api_key

openai_router = APIRouter(prefix="/v1", dependencies=[Security(require_api_key)])
openai_router.include_router(models.router)
openai_router.include_router(completions.router)
openai_router.include_router(files.router)
openai_router.include_router(fine_tuning.router)
