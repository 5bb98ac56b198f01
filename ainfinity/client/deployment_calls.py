"""The deployment and usage calls, as data (`ainfinity.client.calls` has the jobs')."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from ainfinity.client.calls import API, Call
from ainfinity.schema.deployment import (
    Deployment,
    DeploymentCreate,
    DeploymentEvent,
    DeploymentEventList,
    DeploymentList,
    DeploymentStatus,
)
from ainfinity.schema.usage import Usage


def _path(name: str, *rest: str) -> str:
    # Quoted whole: a name can never add a path segment or a query of its own.
    return "/".join((f"{API}/deployments", quote(name, safe=""), *rest))


def _deployment(response: httpx.Response) -> Deployment:
    return Deployment.model_validate_json(response.content)


def create(spec: DeploymentCreate | Mapping[str, Any]) -> Call[Deployment]:
    body = (
        spec.model_dump(mode="json", exclude_unset=True)
        if isinstance(spec, DeploymentCreate)
        else dict(spec)
    )
    return Call("POST", f"{API}/deployments", _deployment, json=body)


def list_page(
    status: DeploymentStatus | str | None, limit: int, after: str | None
) -> Call[DeploymentList]:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = DeploymentStatus(status).value
    if after is not None:
        params["after"] = after
    return Call(
        "GET",
        f"{API}/deployments",
        lambda r: DeploymentList.model_validate_json(r.content),
        params=params,
    )


def get(name: str) -> Call[Deployment]:
    return Call("GET", _path(name), _deployment)


def update(name: str, model: str) -> Call[Deployment]:
    return Call("PATCH", _path(name), _deployment, json={"model": model})


def down(name: str) -> Call[Deployment]:
    return Call("DELETE", _path(name), _deployment)


def events(name: str) -> Call[list[DeploymentEvent]]:
    return Call(
        "GET",
        _path(name, "events"),
        lambda r: DeploymentEventList.model_validate_json(r.content).data,
    )


def task(name: str) -> Call[str]:
    return Call("GET", _path(name, "task"), lambda r: r.text)


def logs(name: str, *, target: str, replica: int | None) -> Call[str]:
    params: dict[str, str | int] = {"target": target}
    if replica is not None:
        params["replica"] = replica
    return Call("GET", _path(name, "logs"), lambda r: r.text, params=params)


def usage() -> Call[Usage]:
    return Call("GET", f"{API}/usage", lambda r: Usage.model_validate_json(r.content))
