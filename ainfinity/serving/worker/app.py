"""The inference worker's HTTP app, served on a unix socket only the control plane can reach.

It speaks OpenAI's protocol on `/v1/chat/completions` and `/v1/completions`, so the gateway
streams requests and answers through as bytes; which files a model id stands for comes from
the gateway in the `x-ainfinity-model-source` header (the worker trusts its one client, the
control plane: the socket lives in a directory only the server's user may enter).

A pinned worker (a deployment's) serves the one model it loaded at start, by its id, as vLLM
serves its `--served-model-name`; with an API key it answers nothing but `/health` without
`Authorization: Bearer <key>`, as vLLM's `--api-key` does.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from ainfinity.schema.openai import ChatCompletionRequest, CompletionRequest
from ainfinity.serving.model_source import HEADER, ModelSource
from ainfinity.serving.worker.engine import Generation, GenerationFailed, SamplingParams
from ainfinity.serving.worker.models import (
    LoadedModel,
    ModelLoadFailed,
    ModelManager,
    PromptError,
    load_model,
)
from ainfinity.serving.worker.responses import (
    chat_chunks,
    chat_completion,
    completion_chunks,
    error_payload,
    text_completion,
)
from ainfinity.serving.worker.token_stats import TokenStatsRequest, TokenStatsResult, measure

logger = logging.getLogger("ainfinity.worker")
# Answers the control plane must not retry: the same request would fail the same way.
_NO_RETRY = {"x-should-retry": "false"}


@dataclass(frozen=True)
class WorkerConfig:
    max_models: int = 2
    default_max_tokens: int = 512
    token_timeout: float = 60.0
    pinned: ModelSource | None = None
    api_key: str | None = None


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.tokens = 0
        self.in_flight = 0


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class UnloadRequest(BaseModel):
    model: str


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of a process, from /proc (no psutil needed)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def create_worker_app(config: WorkerConfig) -> FastAPI:
    app = FastAPI(title="ainfinity inference worker", docs_url=None, redoc_url=None)
    manager = ModelManager(config.max_models)
    if config.pinned is not None:
        # Loaded before the app serves anything: health answers once the model is in memory.
        manager.pin(load_model(config.pinned))
    counters = _Counters()
    started_at = datetime.now(timezone.utc)
    if config.api_key is not None:
        _require_key(app, config.api_key)

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _Refused)
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        body = error_payload(exc.message, code=exc.code, kind=kind)
        body["error"]["param"] = exc.param
        return JSONResponse(body, status_code=exc.status, headers=_NO_RETRY)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        body = error_payload(f"internal error: {type(exc).__name__}", code="internal_error")
        return JSONResponse(body, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": started_at.isoformat(),
            "rss_bytes": rss_bytes(),
            "requests_served": counters.requests,
            "tokens_generated": counters.tokens,
            "in_flight": counters.in_flight,
            "loaded_models": [
                {
                    "id": loaded.source.id,
                    "loaded_at": loaded.loaded_at.isoformat(),
                    "last_used_at": loaded.last_used_at.isoformat(),
                    "requests": loaded.requests,
                    "parameter_bytes": loaded.parameter_bytes,
                }
                for loaded in reversed(manager.loaded())
            ],
        }

    @app.post("/unload")
    async def unload(body: UnloadRequest) -> dict[str, list[str]]:
        return {"unloaded": manager.unload(body.model)}

    @app.post("/token-stats")
    async def token_stats(body: TokenStatsRequest) -> TokenStatsResult:
        return await anyio.to_thread.run_sync(measure, body)

    async def _acquire(request: Request) -> LoadedModel:
        try:
            source = ModelSource.from_json(request.headers[HEADER])
        except (KeyError, ValueError) as exc:
            raise _Refused(400, f"no usable model source: {exc}", code="invalid_request") from exc
        try:
            return await manager.acquire(source)
        except ModelLoadFailed as exc:
            raise _Refused(503, str(exc), code="model_load_failed") from exc

    def count_tokens(n: int) -> None:
        counters.tokens += n  # from the generate thread: one int add under the GIL

    def count_running(change: int) -> None:
        counters.in_flight += change

    async def start(
        request: Request, body: ChatCompletionRequest | CompletionRequest
    ) -> tuple[LoadedModel, Generation]:
        if manager.pinned is not None:
            loaded = manager.use_pinned(body.model)
            if loaded is None:
                raise _Refused(
                    404,
                    f"The model {body.model!r} does not exist; this worker serves "
                    f"{manager.pinned.source.id!r}.",
                    code="model_not_found",
                    param="model",
                )
        else:
            loaded = await _acquire(request)
        try:
            if isinstance(body, ChatCompletionRequest):
                messages = body.messages_as_dicts()
                prompt = await anyio.to_thread.run_sync(loaded.chat_prompt_ids, messages)
            else:
                prompt = await anyio.to_thread.run_sync(loaded.text_prompt_ids, body.prompt_text())
        except PromptError as exc:
            raise _Refused(400, str(exc), code="invalid_prompt", param="messages") from exc
        params = SamplingParams(
            max_new_tokens=_token_budget(body.token_limit(), len(prompt), loaded, config),
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(body.stop_sequences()),
            seed=body.seed,
        )
        generation = Generation(
            loaded.model,
            loaded.tokenizer,
            prompt,
            params,
            token_timeout=config.token_timeout,
            on_tokens=count_tokens,
            on_running=count_running,
        )
        return loaded, generation

    async def answer(request: Request, body: ChatCompletionRequest | CompletionRequest) -> Response:
        counters.requests += 1
        loaded, generation = await start(request, body)
        model = body.model
        chat = isinstance(body, ChatCompletionRequest)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            make = chat_chunks if chat else completion_chunks
            chunks = make(generation, model=model, include_usage=include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        try:
            whole = chat_completion if chat else text_completion
            result: BaseModel = await whole(generation, model=model)
        except GenerationFailed as exc:
            raise _Refused(500, str(exc), code="generation_failed") from exc
        return Response(result.model_dump_json(), media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(request, await _parse(request, ChatCompletionRequest))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, await _parse(request, CompletionRequest))

    return app


def _require_key(app: FastAPI, key: str) -> None:
    """Every route but `/health` answers 401 without `Authorization: Bearer <key>`."""
    expected = f"Bearer {key}".encode()

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Response:
        if request.url.path != "/health":
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                body = error_payload(
                    "A valid Bearer token is required.",
                    code="invalid_api_key",
                    kind="authentication_error",
                )
                return JSONResponse(body, status_code=401, headers=_NO_RETRY)
        response: Response = await call_next(request)
        return response


async def _parse(
    request: Request, kind: type[ChatCompletionRequest] | type[CompletionRequest]
) -> ChatCompletionRequest | CompletionRequest:
    try:
        return kind.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _Refused(400, str(exc.errors()[0].get("msg")), code="invalid_request") from exc


def _token_budget(asked: int | None, prompt: int, loaded: LoadedModel, config: WorkerConfig) -> int:
    """How many tokens to generate: what was asked, or the default, within the context."""
    context = loaded.context_length
    room = None if context is None else context - prompt
    if room is not None and room <= 0:
        raise _Refused(
            400,
            f"The prompt is {prompt} tokens; this model's context is {context} tokens.",
            code="context_length_exceeded",
            param="messages",
        )
    if asked is None:
        return config.default_max_tokens if room is None else min(config.default_max_tokens, room)
    if room is not None and asked > room:
        raise _Refused(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt + asked} tokens ({prompt} in the prompt, {asked} for the completion).",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return asked
