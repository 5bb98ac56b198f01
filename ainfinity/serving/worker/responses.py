"""OpenAI's answers built from a generation: whole, or as Server-Sent Event chunks.

A stream is `data: {chunk}` lines ending with `data: [DONE]`. A generation that fails half
way ends the stream with one `data: {"error": {...}}` line instead, which the `openai` SDK
raises as an `APIError` (a stream is never left hanging, and never ends as if complete).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ainfinity.schema.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    Completion,
    CompletionChoice,
    OpenAIError,
    OpenAIErrorDetail,
    Usage,
    completion_id,
    now_seconds,
)
from ainfinity.serving.worker.engine import Generation, GenerationFailed

logger = logging.getLogger("ainfinity.worker")

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_payload(message: str, *, code: str, kind: str = "server_error") -> dict[str, Any]:
    return OpenAIError(
        error=OpenAIErrorDetail(message=message, type=kind, param=None, code=code)
    ).model_dump()


def usage(generation: Generation) -> Usage:
    prompt = len(generation.prompt_ids)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=generation.completion_tokens,
        total_tokens=prompt + generation.completion_tokens,
    )


async def chat_completion(generation: Generation, *, model: str) -> ChatCompletion:
    text = await generation.text()
    return ChatCompletion(
        id=completion_id("chatcmpl"),
        created=now_seconds(),
        model=model,
        choices=[
            ChatChoice(
                message=AssistantMessage(content=text),
                finish_reason=generation.finish_reason,
            )
        ],
        usage=usage(generation),
    )


async def text_completion(generation: Generation, *, model: str) -> Completion:
    text = await generation.text()
    return Completion(
        id=completion_id("cmpl"),
        created=now_seconds(),
        model=model,
        choices=[CompletionChoice(text=text, finish_reason=generation.finish_reason)],
        usage=usage(generation),
    )


def chat_chunks(generation: Generation, *, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    base = {
        "id": completion_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": now_seconds(),
        "model": model,
    }

    def chunk(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

    return _stream(
        generation,
        first=chunk({"role": "assistant", "content": ""}, None),
        piece=lambda text: chunk({"content": text}, None),
        last=lambda reason: chunk({}, reason),
        usage_chunk={**base, "choices": []} if include_usage else None,
    )


def completion_chunks(
    generation: Generation, *, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {
        "id": completion_id("cmpl"),
        "object": "text_completion",
        "created": now_seconds(),
        "model": model,
    }

    def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

    return _stream(
        generation,
        first=None,
        piece=lambda text: chunk(text, None),
        last=lambda reason: chunk("", reason),
        usage_chunk={**base, "choices": []} if include_usage else None,
    )


async def _stream(
    generation: Generation,
    *,
    first: dict[str, Any] | None,
    piece: Callable[[str], dict[str, Any]],
    last: Callable[[str], dict[str, Any]],
    usage_chunk: dict[str, Any] | None,
) -> AsyncIterator[bytes]:
    if first is not None:
        yield sse(first)
    pieces = generation.pieces()
    try:
        async for text in pieces:
            yield sse(piece(text))
    except GenerationFailed as exc:
        logger.warning("generation failed mid-stream: %s", exc)
        yield sse(error_payload(str(exc), code="generation_failed"))
        return
    finally:
        await pieces.aclose()
    yield sse(last(generation.finish_reason))
    if usage_chunk is not None:
        yield sse({**usage_chunk, "usage": usage(generation).model_dump()})
    yield DONE
