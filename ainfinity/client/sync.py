"""`Client`: the API from Python, blocking (httpx.Client)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


class Client:
    """A connection to an ainfinity server.

    `base_url` defaults to `AINFINITY_URL` (else http://127.0.0.1:8000) and `api_key` to
    `AINFINITY_API_KEY` (else the key in `$AINFINITY_HOME/api_key`). Errors are raised as
    `ApiError` subclasses (`NotFound`, `Conflict`, ...) or `ConnectionFailed`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=default_headers(resolve_api_key(api_key)),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: calls.Call[T]) -> T:
        try:
            response = self._http.request(
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

    def create_job(
        self, spec: JobCreate | Mapping[str, Any], idempotency_key: str | None = None
    ) -> Job:
        """Launch a job; a retry with the same `idempotency_key` and spec acts once."""
        return self._send(calls.create_job(spec, idempotency_key))

    def list_page(
        self, status: JobStatus | str | None = None, limit: int = 20, after: str | None = None
    ) -> JobList:
        """One page of jobs, newest first; pass its `next_cursor` as `after` for the next."""
        return self._send(calls.list_page(status, limit, after))

    def list_jobs(
        self, status: JobStatus | str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every job, newest first, fetched a page at a time as the iterator advances."""
        after: str | None = None
        while True:
            page = self.list_page(status, page_size, after)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    def get_job(self, name: str) -> Job:
        return self._send(calls.get_job(name))

    def cancel_job(self, name: str, idempotency_key: str | None = None) -> Job:
        return self._send(calls.cancel_job(name, idempotency_key))

    def pause_job(self, name: str) -> Job:
        """Save a checkpoint at the next step's end and stop (PAUSING, then PAUSED)."""
        return self._send(calls.pause_job(name))

    def resume_job(self, name: str) -> Job:
        """Relaunch a paused job from its newest complete checkpoint."""
        return self._send(calls.resume_job(name))

    def delete_job(self, name: str) -> None:
        self._send(calls.delete_job(name))

    def logs(self, name: str, tail: int | None = None) -> str:
        """The job's output so far (the last `tail` lines)."""
        return self._send(calls.logs(name, tail))

    def follow_logs(self, name: str, tail: int | None = None) -> Iterator[str]:
        """The job's output line by line (no line ends), as it is written, until it ends."""
        call = calls.logs(name, tail, follow=True)
        try:
            with self._http.stream(
                call.method, call.path, params=call.params, timeout=FOLLOW_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise connection_failed(self.base_url, exc) from exc

    def events(self, name: str) -> list[Event]:
        return self._send(calls.events(name))

    def metrics(self, name: str) -> list[Metric]:
        return self._send(calls.metrics(name))

    def checkpoints(self, name: str) -> list[Checkpoint]:
        return self._send(calls.checkpoints(name))

    def task(self, name: str) -> str:
        """The rendered SkyPilot task, as YAML."""
        return self._send(calls.task(name))

    def estimate(self, spec: JobCreate | Mapping[str, Any]) -> CostEstimate:
        return self._send(calls.estimate(spec))

    def health(self) -> dict[str, str]:
        return self._send(calls.health())

    # -- models ----------------------------------------------------------------------------

    def list_models(self, limit: int = 20, after: str | None = None) -> ModelList:
        """One page of models, newest first (base models last); pass its `next_cursor` as
        `after` for the next."""
        return self._send(calls.list_models(limit, after))

    def iter_models(self, page_size: int = 100) -> Iterator[Model]:
        """Every model this key may see, fetched a page at a time as the iterator advances."""
        after: str | None = None
        while True:
            page = self.list_models(page_size, after)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    def get_model(self, model_id: str) -> Model:
        """A model (`ft:<base>:<job>`, a checkpoint `...:ckpt-<step>`, or a base model)."""
        return self._send(calls.get_model(model_id))

    def delete_model(self, model_id: str) -> None:
        """Unregister a fine-tuned model and unload it; its job and files stay."""
        self._send(calls.delete_model(model_id))

    # -- chat ------------------------------------------------------------------------------

    def chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> ChatCompletion:
        """The model's whole answer to `messages` (`{"role", "content"}` dicts).

        `options` are OpenAI's request fields (`max_tokens`, `temperature`, `top_p`, `stop`,
        `seed`, ...); None leaves one at the server's default."""
        return self._send(calls.chat(model, messages, options))

    def chat_stream(
        self, model: str, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> Iterator[str]:
        """The answer as it is generated, a piece of text at a time.

        Raises `StreamFailed` when the server ends the stream with an error (or cuts it);
        leaving the loop early closes the request, which stops the generation."""
        call = calls.chat_stream(model, messages, options)
        stream = ChatStream()
        try:
            with self._http.stream(
                call.method, call.path, json=call.json, headers=call.headers, timeout=call.timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                for line in response.iter_lines():
                    piece = stream.feed(line)
                    if piece:
                        yield piece
        except httpx.TransportError as exc:
            raise connection_failed(self.base_url, exc) from exc
        stream.end()

    # -- deployments and usage ---------------------------------------------------------------

    def create_deployment(self, spec: DeploymentCreate | Mapping[str, Any]) -> Deployment:
        """Serve a model from replicas of its own (PENDING; READY once a replica answers)."""
        return self._send(deployment_calls.create(spec))

    def list_deployments_page(
        self,
        status: DeploymentStatus | str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> DeploymentList:
        return self._send(deployment_calls.list_page(status, limit, after))

    def get_deployment(self, name: str) -> Deployment:
        return self._send(deployment_calls.get(name))

    def update_deployment(self, name: str, model: str) -> Deployment:
        """A rolling update to `model` (UPDATING, then READY)."""
        return self._send(deployment_calls.update(name, model))

    def delete_deployment(self, name: str) -> Deployment:
        """Tear it down (STOPPING, then STOPPED); the record stays."""
        return self._send(deployment_calls.down(name))

    def deployment_events(self, name: str) -> list[DeploymentEvent]:
        return self._send(deployment_calls.events(name))

    def deployment_task(self, name: str) -> str:
        """The rendered SkyServe task, as YAML (its token left out)."""
        return self._send(deployment_calls.task(name))

    def deployment_logs(
        self, name: str, target: str = "controller", replica: int | None = None
    ) -> str:
        return self._send(deployment_calls.logs(name, target=target, replica=replica))

    def usage(self) -> Usage:
        """Cost per key and UTC day of SkyPilot jobs and deployments."""
        return self._send(deployment_calls.usage())
