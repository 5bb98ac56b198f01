"""`/api/v1/deployments`: serve a model from replicas of its own, locally or on SkyServe."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from ainfinity.api.dependencies import CurrentKey, DeploymentsDep
from ainfinity.deployments.service import public
from ainfinity.schema.deployment import (
    Deployment,
    DeploymentCreate,
    DeploymentEventList,
    DeploymentList,
    DeploymentStatus,
    DeploymentUpdate,
)
from ainfinity.schema.error import ErrorResponse

router = APIRouter(prefix="/deployments", tags=["deployments"])

DeploymentName = Annotated[
    str, Path(min_length=1, max_length=64, description="The deployment's name.")
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such deployment"}
}
# The YAML document `GET /{name}/task` answers with: a SkyServe task (a mapping).
SERVICE_TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "run", "resources", "envs", "service"],
    "properties": {
        "name": {"type": "string"},
        "resources": {"type": "object"},
        "file_mounts": {"type": "object"},
        "envs": {"type": "object", "additionalProperties": {"type": "string"}},
        "secrets": {"type": "object"},
        "service": {"type": "object"},
        "setup": {"type": "string"},
        "run": {"type": "string"},
    },
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"model": ErrorResponse, "description": "No such model"},
        409: {"model": ErrorResponse, "description": "Name taken, or too many local ones"},
        501: {"model": ErrorResponse, "description": "Executor not available"},
    },
)
def create_deployment(
    body: DeploymentCreate, deployments: DeploymentsDep, key: CurrentKey
) -> Deployment:
    """Validate a deployment (its SkyServe task checked by SkyPilot's own code), store it,
    and start it: PENDING, PROVISIONING, then READY."""
    return public(deployments.create(body, caller=key))


@router.get("")
def list_deployments(
    deployments: DeploymentsDep,
    key: CurrentKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=256, description="`next_cursor`")] = None,
    status: DeploymentStatus | None = None,
) -> DeploymentList:
    """Deployments newest first (a `user` key sees its own; `admin` sees all)."""
    page = deployments.page(limit=limit, cursor=after, status=status, caller=key)
    return DeploymentList(
        data=[public(record) for record in page.deployments],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get("/{name}", responses=NOT_FOUND)
def get_deployment(
    name: DeploymentName, deployments: DeploymentsDep, key: CurrentKey
) -> Deployment:
    """Status, replicas, endpoint and what it costs so far."""
    return public(deployments.get(name, caller=key))


@router.patch(
    "/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Not READY"}},
)
def update_deployment(
    name: DeploymentName, body: DeploymentUpdate, deployments: DeploymentsDep, key: CurrentKey
) -> Deployment:
    """A rolling update to another model: UPDATING until replicas serve it, then READY."""
    return public(deployments.update(name, model=body.model, caller=key))


@router.delete(
    "/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Already stopped"}},
)
def delete_deployment(
    name: DeploymentName, deployments: DeploymentsDep, key: CurrentKey
) -> Deployment:
    """Tear the deployment down (SkyServe's `down`): STOPPING, then STOPPED. The record,
    its events and its cost stay."""
    return public(deployments.down(name, caller=key))


@router.get("/{name}/events", responses=NOT_FOUND)
def get_events(
    name: DeploymentName, deployments: DeploymentsDep, key: CurrentKey
) -> DeploymentEventList:
    """Every status change, SkyServe status, replica change and user action, oldest first."""
    return DeploymentEventList(data=deployments.events(name, caller=key))


@router.get(
    "/{name}/task",
    response_class=Response,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "A local deployment"},
        200: {"content": {"application/yaml": {"schema": SERVICE_TASK_SCHEMA}}},
    },
)
def get_task(name: DeploymentName, deployments: DeploymentsDep, key: CurrentKey) -> Response:
    """The rendered SkyServe task, its token left out; `sky serve up task.yaml -n <name>
    --secret AINFINITY_API_KEY=<token>` runs it by hand."""
    return Response(deployments.task_yaml(name, caller=key), media_type="application/yaml")


@router.get(
    "/{name}/logs",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_logs(
    name: DeploymentName,
    deployments: DeploymentsDep,
    key: CurrentKey,
    follow: Annotated[bool, Query(description="Keep streaming until the log ends.")] = False,
    target: Annotated[
        Literal["controller", "load_balancer", "replica"],
        Query(description="SkyPilot: whose log (a local deployment has its worker's)."),
    ] = "controller",
    replica: Annotated[
        int | None, Query(ge=1, le=100_000, description="The replica, with target=replica.")
    ] = None,
) -> StreamingResponse:
    """SkyServe's controller, load balancer or replica log; a local deployment's worker log."""
    chunks = deployments.logs(name, caller=key, target=target, replica=replica, follow=follow)
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")
