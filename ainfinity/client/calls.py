"""Each API call as data: how to build its request and how to read its answer.

`Client` and `AsyncClient` only send these; everything they have in common lives here, so
the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from ainfinity.client.config import GENERATE_TIMEOUT
from ainfinity.client.errors import raise_for_response
from ainfinity.schema.activity import Event, EventList, Metric, MetricList
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import Checkpoint, CheckpointList, Job, JobCreate, JobList, JobStatus
from ainfinity.schema.model import Model, ModelList
from ainfinity.schema.openai import ChatCompletion

T = TypeVar("T")

API = "/api/v1"
# The OpenAI-compatible routes (chat), beside the native ones.
OPENAI = "/v1"
_HEALTH = TypeAdapter(dict[str, str])


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and the function that turns its (successful) answer into a `T`."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str | int] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # None: the client's own timeout. Generating may take longer than any other call.
    timeout: httpx.Timeout | None = None

    def result(self, response: httpx.Response) -> T:
        """The typed result, or the typed error the answer carries."""
        raise_for_response(response)
        return self.parse(response)


def _job_path(name: str, *rest: str) -> str:
    # Quoted whole: a name can never add a path segment or a query of its own.
    return "/".join((f"{API}/jobs", quote(name, safe=""), *rest))


def _model_path(model_id: str) -> str:
    # Ids hold colons (`ft:base:job:ckpt-10`); quoted whole like job names.
    return f"{API}/models/{quote(model_id, safe='')}"


def _spec_body(spec: JobCreate | Mapping[str, Any]) -> Any:
    if isinstance(spec, JobCreate):
        # Unset fields are left out, so the server applies its own defaults.
        return spec.model_dump(mode="json", exclude_unset=True)
    return dict(spec)


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _job(response: httpx.Response) -> Job:
    return Job.model_validate_json(response.content)


def _text(response: httpx.Response) -> str:
    return response.text


def _nothing(response: httpx.Response) -> None:
    return None


def create_job(spec: JobCreate | Mapping[str, Any], idempotency_key: str | None) -> Call[Job]:
    return Call(
        "POST", f"{API}/jobs", _job, json=_spec_body(spec), headers=_idempotency(idempotency_key)
    )


def list_page(status: JobStatus | str | None, limit: int, after: str | None) -> Call[JobList]:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = JobStatus(status).value
    if after is not None:
        params["after"] = after
    return Call(
        "GET", f"{API}/jobs", lambda r: JobList.model_validate_json(r.content), params=params
    )


def get_job(name: str) -> Call[Job]:
    return Call("GET", _job_path(name), _job)


def cancel_job(name: str, idempotency_key: str | None) -> Call[Job]:
    return Call("POST", _job_path(name, "cancel"), _job, headers=_idempotency(idempotency_key))


def pause_job(name: str) -> Call[Job]:
    return Call("POST", _job_path(name, "pause"), _job)


def resume_job(name: str) -> Call[Job]:
    return Call("POST", _job_path(name, "resume"), _job)


def delete_job(name: str) -> Call[None]:
    return Call("DELETE", _job_path(name), _nothing)


def logs(name: str, tail: int | None, *, follow: bool = False) -> Call[str]:
    params: dict[str, str | int] = {}
    if tail is not None:
        params["tail"] = tail
    if follow:
        params["follow"] = "true"
    return Call("GET", _job_path(name, "logs"), _text, params=params)


def events(name: str) -> Call[list[Event]]:
    return Call(
        "GET", _job_path(name, "events"), lambda r: EventList.model_validate_json(r.content).data
    )


def metrics(name: str) -> Call[list[Metric]]:
    return Call(
        "GET", _job_path(name, "metrics"), lambda r: MetricList.model_validate_json(r.content).data
    )


def checkpoints(name: str) -> Call[list[Checkpoint]]:
    return Call(
        "GET",
        _job_path(name, "checkpoints"),
        lambda r: CheckpointList.model_validate_json(r.content).data,
    )


def task(name: str) -> Call[str]:
    return Call("GET", _job_path(name, "task"), _text)


def estimate(spec: JobCreate | Mapping[str, Any]) -> Call[CostEstimate]:
    return Call(
        "POST",
        f"{API}/jobs/estimate",
        lambda r: CostEstimate.model_validate_json(r.content),
        json=_spec_body(spec),
    )


# -- models ---------------------------------------------------------------------------------


def list_models(limit: int, after: str | None) -> Call[ModelList]:
    params: dict[str, str | int] = {"limit": limit}
    if after is not None:
        params["after"] = after
    return Call(
        "GET", f"{API}/models", lambda r: ModelList.model_validate_json(r.content), params=params
    )


def get_model(model_id: str) -> Call[Model]:
    return Call("GET", _model_path(model_id), lambda r: Model.model_validate_json(r.content))


def delete_model(model_id: str) -> Call[None]:
    return Call("DELETE", _model_path(model_id), _nothing)


# -- chat (`/v1`) -----------------------------------------------------------------------------


def chat_body(
    model: str, messages: Iterable[Mapping[str, Any]], options: Mapping[str, Any], *, stream: bool
) -> dict[str, Any]:
    """An OpenAI chat request; options left at None are left out (the server's defaults)."""
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    body.update({name: value for name, value in options.items() if value is not None})
    if stream:
        body["stream"] = True
    return body


def chat(
    model: str, messages: Iterable[Mapping[str, Any]], options: Mapping[str, Any]
) -> Call[ChatCompletion]:
    return Call(
        "POST",
        f"{OPENAI}/chat/completions",
        lambda r: ChatCompletion.model_validate_json(r.content),
        json=chat_body(model, messages, options, stream=False),
        timeout=GENERATE_TIMEOUT,
    )


def chat_stream(
    model: str, messages: Iterable[Mapping[str, Any]], options: Mapping[str, Any]
) -> Call[None]:
    """The streamed chat request; its answer is read line by line (`streams.ChatStream`)."""
    return Call(
        "POST",
        f"{OPENAI}/chat/completions",
        _nothing,
        json=chat_body(model, messages, options, stream=True),
        headers={"Accept": "text/event-stream"},
        timeout=GENERATE_TIMEOUT,
    )


def health() -> Call[dict[str, str]]:
    return Call("GET", "/health", lambda r: _HEALTH.validate_json(r.content))
