"""`AsyncClient`: the API from asyncio code (httpx.AsyncClient); the same calls as `Client`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ainfinity.client import calls, deployment_calls
from ainfinity.client.config import (
    DEFAULT_TIMEOUT,
    FOLLOW_TIMEOUT,
    default_headers,
    resolve_api_key,
    resolve_url,
)
from ainfinity.client.errors import connection_failed, error_from_response
from ainfinity.client.streams import ChatStream
from ainfinity.schema.activity import Event, Metric
from ainfinity.schema.deployment import (
    Deployment,
    DeploymentCreate,
    DeploymentEvent,
    DeploymentList,
    DeploymentStatus,
)
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import Checkpoint, Job, JobCreate, JobList, JobStatus
from ainfinity.schema.model import Model, ModelList
from ainfinity.schema.openai import ChatCompletion
from ainfinity.schema.usage import Usage

T = TypeVar("T")


class AsyncClient:
    """Like `Client`, with every method a coroutine (`list_jobs` and `follow_logs` are
    async iterators). Use it as `async with AsyncClient() as client:`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=default_headers(resolve_api_key(api_key)),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                headers=call.headers,
                timeout=httpx.USE_CLIENT_DEFAULT if call.timeout is None else call.timeout,
            )
        except httpx.TransportError as exc:
            raise connection_failed(self.base_url, exc) from exc
        return call.result(response)

    # -- jobs ------------------------------------------------------------------------------

    async def create_job(
        self, spec: JobCreate | Mapping[str, Any], idempotency_key: str | None = None
    ) -> Job:
        return await self._send(calls.create_job(spec, idempotency_key))

    async def list_page(
        self, status: JobStatus | str | None = None, limit: int = 20, after: str | None = None
    ) -> JobList:
        return await self._send(calls.list_page(status, limit, after))

    async def list_jobs(
        self, status: JobStatus | str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        after: str | None = None
        while True:
            page = await self.list_page(status, page_size, after)
            for job in page.data:
                yield job
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    async def get_job(self, name: str) -> Job:
        return await self._send(calls.get_job(name))

    async def cancel_job(self, name: str, idempotency_key: str | None = None) -> Job:
        return await self._send(calls.cancel_job(name, idempotency_key))

    async def pause_job(self, name: str) -> Job:
        """Save a checkpoint at the next step's end and stop (PAUSING, then PAUSED)."""
        return await self._send(calls.pause_job(name))

    async def resume_job(self, name: str) -> Job:
        """Relaunch a paused job from its newest complete checkpoint."""
        return await self._send(calls.resume_job(name))

    async def delete_job(self, name: str) -> None:
        await self._send(calls.delete_job(name))

    async def logs(self, name: str, tail: int | None = None) -> str:
        return await self._send(calls.logs(name, tail))

    async def follow_logs(self, name: str, tail: int | None = None) -> AsyncIterator[str]:
        call = calls.logs(name, tail, follow=True)
        try:
            async with self._http.stream(
                call.method, call.path, params=call.params, timeout=FOLLOW_TIMEOUT
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    yield line
        except httpx.TransportError as exc:
            raise connection_failed(self.base_url, exc) from exc

    async def events(self, name: str) -> list[Event]:
        return await self._send(calls.events(name))

    async def metrics(self, name: str) -> list[Metric]:
        return await self._send(calls.metrics(name))

    async def checkpoints(self, name: str) -> list[Checkpoint]:
        return await self._send(calls.checkpoints(name))

    async def task(self, name: str) -> str:
        return await self._send(calls.task(name))

    async def estimate(self, spec: JobCreate | Mapping[str, Any]) -> CostEstimate:
        return await self._send(calls.estimate(spec))

    async def health(self) -> dict[str, str]:
        return await self._send(calls.health())

    # -- models ----------------------------------------------------------------------------

    async def list_models(self, limit: int = 20, after: str | None = None) -> ModelList:
        return await self._send(calls.list_models(limit, after))

    async def iter_models(self, page_size: int = 100) -> AsyncIterator[Model]:
        after: str | None = None
        while True:
            page = await self.list_models(page_size, after)
            for model in page.data:
                yield model
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    async def get_model(self, model_id: str) -> Model:
        return await self._send(calls.get_model(model_id))

    async def delete_model(self, model_id: str) -> None:
        await self._send(calls.delete_model(model_id))

    # -- chat ------------------------------------------------------------------------------

    async def chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> ChatCompletion:
        return await self._send(calls.chat(model, messages, options))

    async def chat_stream(
        self, model: str, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> AsyncIterator[str]:
        call = calls.chat_stream(model, messages, options)
        stream = ChatStream()
        try:
            async with self._http.stream(
                call.method, call.path, json=call.json, headers=call.headers, timeout=call.timeout
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    piece = stream.feed(line)
                    if piece:
                        yield piece
        except httpx.TransportError as exc:
            raise connection_failed(self.base_url, exc) from exc
        stream.end()

    # -- deployments and usage ---------------------------------------------------------------

    async def create_deployment(self, spec: DeploymentCreate | Mapping[str, Any]) -> Deployment:
        """Serve a model from replicas of its own (PENDING; READY once a replica answers)."""
        return await self._send(deployment_calls.create(spec))

    async def list_deployments_page(
        self,
        status: DeploymentStatus | str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> DeploymentList:
        return await self._send(deployment_calls.list_page(status, limit, after))

    async def get_deployment(self, name: str) -> Deployment:
        return await self._send(deployment_calls.get(name))

    async def update_deployment(self, name: str, model: str) -> Deployment:
        """A rolling update to `model` (UPDATING, then READY)."""
        return await self._send(deployment_calls.update(name, model))

    async def delete_deployment(self, name: str) -> Deployment:
        """Tear it down (STOPPING, then STOPPED); the record stays."""
        return await self._send(deployment_calls.down(name))

    async def deployment_events(self, name: str) -> list[DeploymentEvent]:
        return await self._send(deployment_calls.events(name))

    async def deployment_task(self, name: str) -> str:
        """The rendered SkyServe task, as YAML (its token left out)."""
        return await self._send(deployment_calls.task(name))

    async def deployment_logs(
        self, name: str, target: str = "controller", replica: int | None = None
    ) -> str:
        return await self._send(deployment_calls.logs(name, target=target, replica=replica))

    async def usage(self) -> Usage:
        """Cost per key and UTC day of SkyPilot jobs and deployments."""
        return await self._send(deployment_calls.usage())
