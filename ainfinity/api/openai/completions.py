"""`POST /v1/chat/completions` and `POST /v1/completions`: whole answers, or streams of
`data: {chunk}` lines ending with `data: [DONE]`."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from starlette.types import Send

from ainfinity.api.dependencies import CurrentKey, ServingDep
from ainfinity.schema.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    OpenAIError,
)
from ainfinity.serving.gateway import WorkerReply

router = APIRouter(tags=["openai"])

_STREAM_DOC = {
    "schema": {"type": "string", "description": "`data: {chunk}` lines, then `data: [DONE]`"}
}


def _responses(whole: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": whole, "content": {"text/event-stream": _STREAM_DOC}},
        404: {"model": OpenAIError, "description": "Unknown model (or not yours)"},
        503: {"model": OpenAIError, "description": "The inference worker is down"},
    }


class _ClosingStream(StreamingResponse):
    """Closes its iterator however the response ends (the client leaving included), so the
    worker's stream is closed and generation stops."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


def _reply(reply: WorkerReply) -> Response:
    if reply.chunks is not None:
        return _ClosingStream(
            reply.chunks,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


@router.post("/chat/completions", response_model=None, responses=_responses(ChatCompletion))
async def create_chat_completion(
    body: ChatCompletionRequest, serving: ServingDep, key: CurrentKey
) -> Response:
    """Chat with a model; the messages are rendered with the chat template it was trained with."""
    return _reply(await serving.complete(body, caller=key))


@router.post("/completions", response_model=None, responses=_responses(Completion))
async def create_completion(
    body: CompletionRequest, serving: ServingDep, key: CurrentKey
) -> Response:
    """Continue a prompt (as the model's prompt/completion training rows were encoded)."""
    return _reply(await serving.complete(body, caller=key))
