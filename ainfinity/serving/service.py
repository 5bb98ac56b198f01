"""ServingService: what the model, serving and `/v1` routes ask for. No HTTP in here."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import AdminOnly, InvalidRequest
from ainfinity.schema.model import (
    LoadedModel,
    Model,
    ServingStatus,
    UnloadResult,
    WorkerCrash,
    WorkerStatus,
)
from ainfinity.schema.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIModel,
    OpenAIModelList,
)
from ainfinity.serving.gateway import Gateway, WorkerReply

if TYPE_CHECKING:
    from ainfinity.deployments.routing import DeploymentRouter
from ainfinity.serving.registry import ModelPage, ModelRegistry
from ainfinity.serving.supervisor import WorkerSupervisor

logger = logging.getLogger("ainfinity.serving")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


class ServingService:
    def __init__(
        self,
        *,
        settings: Settings,
        registry: ModelRegistry,
        supervisor: WorkerSupervisor,
        gateway: Gateway,
        router: DeploymentRouter | None = None,
    ) -> None:
        self.settings = settings
        # READY deployments answer for their model before the on-demand worker does.
        self.router = router
        self.registry = registry
        self.supervisor = supervisor
        self.gateway = gateway

    # -- models ---------------------------------------------------------------------------

    def list_models(self, *, caller: ApiKey, limit: int, cursor: str | None) -> ModelPage:
        return self.registry.list_models(caller=caller, limit=limit, cursor=cursor)

    def get_model(self, model_id: str, *, caller: ApiKey) -> Model:
        return self.registry.get_model(model_id, caller=caller)

    async def delete_model(self, model_id: str, *, caller: ApiKey) -> None:
        """Unregister a fine-tuned model and unload it (and its checkpoints)."""
        await anyio.to_thread.run_sync(lambda: self.registry.unregister(model_id, caller=caller))
        await self.forget(model_id)
        logger.info("model deleted", extra={"model": model_id, "actor": caller.name})

    async def forget(self, model_id: str) -> None:
        """Unload a model that no longer exists, if a worker runs."""
        await self.gateway.call_if_running("POST", "/unload", {"model": model_id})

    # -- the worker -------------------------------------------------------------------------

    async def unload(self, model_id: str, *, caller: ApiKey) -> UnloadResult:
        if caller.role != "admin":
            raise AdminOnly("Only an admin key may unload models.")
        answer = await self.gateway.call_if_running("POST", "/unload", {"model": model_id})
        return UnloadResult(model=model_id, unloaded=bool(answer and answer.get("unloaded")))

    async def status(self, *, caller: ApiKey) -> ServingStatus:
        state = self.supervisor.shared_state()
        stats: dict[str, Any] = await self.gateway.call_if_running("GET", "/stats") or {}
        loaded = [LoadedModel.model_validate(item) for item in stats.get("loaded_models", [])]
        if caller.role != "admin":
            visible = {m.id for m in self.registry.visible_ids(caller=caller)}
            # Checkpoints of a visible model are visible too.
            loaded = [m for m in loaded if m.id in visible or m.id.rsplit(":", 1)[0] in visible]
        started = state.get("started_at")
        worker = WorkerStatus(
            id=0,
            status=state.get("status", "stopped"),
            pid=state.get("pid"),
            started_at=datetime.fromisoformat(started) if started else None,
            restarts=state.get("restarts", 0),
            crashes=[WorkerCrash.model_validate(c) for c in state.get("crashes", [])],
            loaded_models=loaded,
            rss_bytes=stats.get("rss_bytes"),
            requests_served=stats.get("requests_served", 0),
            tokens_generated=stats.get("tokens_generated", 0),
            in_flight=stats.get("in_flight", 0),
        )
        return ServingStatus(
            workers=[worker],
            max_models=self.settings.serve_max_models,
            max_concurrency=self.settings.serve_max_concurrency,
            max_queue=self.settings.serve_max_queue,
            active_requests=self.gateway.active,
            queued_requests=self.gateway.waiting,
        )

    # -- OpenAI-compatible ---------------------------------------------------------------------

    def openai_models(self, *, caller: ApiKey) -> OpenAIModelList:
        return OpenAIModelList(data=[_openai(m) for m in self.registry.visible_ids(caller=caller)])

    def openai_model(self, model_id: str, *, caller: ApiKey) -> OpenAIModel:
        return _openai(self.registry.get_model(model_id, caller=caller))

    async def complete(
        self, request: ChatCompletionRequest | CompletionRequest, *, caller: ApiKey
    ) -> WorkerReply:
        """Generate for a chat or text completion request, through the worker."""
        asked = request.token_limit()
        if asked is not None and asked > self.settings.serve_max_tokens:
            param = "max_tokens"
            if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens:
                param = "max_completion_tokens"
            raise InvalidRequest(
                f"{param} is {asked}; this server generates at most "
                f"{self.settings.serve_max_tokens} tokens per request.",
                param=param,
            )
        path = CHAT_PATH if isinstance(request, ChatCompletionRequest) else COMPLETIONS_PATH
        body = request.model_dump_json(exclude_unset=True).encode()
        route = await self.router.route(request.model) if self.router is not None else None
        if route is not None:
            # The caller may use the model (404 otherwise), as for the on-demand worker.
            await anyio.to_thread.run_sync(
                lambda: self.registry.get_model(request.model, caller=caller)
            )
            return await route.gateway.generate(
                path, body, route.source, stream=bool(request.stream)
            )
        source = self.registry.serving_source(request.model, caller=caller)
        return await self.gateway.generate(path, body, source, stream=bool(request.stream))


def _openai(model: Model) -> OpenAIModel:
    return OpenAIModel(
        id=model.id, created=int(model.created_at.timestamp()), owned_by=model.owner or "ainfinity"
    )
