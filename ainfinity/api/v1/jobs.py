"""`/api/v1/jobs`: launch, list, inspect, cancel and delete fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse

from ainfinity.api.dependencies import CurrentKey, ServiceDep
from ainfinity.api.shutdown import server_stopping
from ainfinity.schema.activity import EventList, MetricList
from ainfinity.schema.error import ErrorResponse
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import CheckpointList, Job, JobCreate, JobList, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])
_TEXT = "text/plain; charset=utf-8"

JobName = Annotated[str, Path(min_length=1, max_length=64, description="The job's name.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retrying with the same key and body within 24 h returns the first answer; "
        "the same key with another body is 409 `idempotency_conflict`.",
    ),
]
# The YAML document `GET /{name}/task` answers with: a SkyPilot task (a mapping), as rendered
# by ainfinity.jobs.task_render.
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "run", "workdir", "resources", "envs"],
    "properties": {
        "name": {"type": "string"},
        "workdir": {"type": "string"},
        "num_nodes": {"type": "integer"},
        "resources": {"type": "object"},
        "file_mounts": {"type": "object"},
        "envs": {"type": "object", "additionalProperties": {"type": "string"}},
        "setup": {"type": "string"},
        "run": {"type": "string"},
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such job"}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"model": ErrorResponse, "description": "A dataset outside AINFINITY_DATA_DIRS"},
        409: {"model": ErrorResponse, "description": "Name taken, or Idempotency-Key reused"},
        501: {"model": ErrorResponse, "description": "Executor not available"},
    },
)
def create_job(
    body: JobCreate, service: ServiceDep, key: CurrentKey, idempotency_key: IdempotencyKey = None
) -> Job:
    """Validate a job, store it with its rendered SkyPilot task, and queue it to run."""
    return service.create_job_once(body, caller=key, idempotency_key=idempotency_key)


# Declared before the `/{name}` routes, so that "estimate" is never read as a job's name.
@router.post(
    "/estimate",
    responses={
        422: {"model": ErrorResponse, "description": "No accelerator, or no offer"},
        503: {"model": ErrorResponse, "description": "SkyPilot's catalog cannot be read"},
    },
)
def estimate_cost(body: JobCreate, service: ServiceDep) -> CostEstimate:
    """Hourly price of the job's resources at SkyPilot's catalog prices; nothing is launched.

    The cheapest offer (cloud, region, instance type) for `resources.accelerators` on
    `num_nodes` nodes, spot or on-demand, and the next cheapest instance types."""
    return service.estimate_cost(body)


@router.get("")
def list_jobs(
    service: ServiceDep,
    key: CurrentKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=256, description="`next_cursor`")] = None,
    status: JobStatus | None = None,
) -> JobList:
    """Jobs newest first (a `user` key sees its own; `admin` sees all); pass `next_cursor`
    as `after` for the next page."""
    page = service.list_jobs(limit=limit, cursor=after, status=status, caller=key)
    return JobList(
        data=[record.public() for record in page.jobs],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get("/{name}", response_model=Job, responses=NOT_FOUND)
async def get_job(name: JobName, service: ServiceDep, key: CurrentKey) -> Response:
    # The hottest route. A record is one small file, read from the page cache in tens of
    # microseconds: less than the two thread hops a sync route costs (handler, then
    # response validation). It was validated when read, so it is sent as it is.
    record = service.get_job(name, caller=key)
    return Response(record.public_json(), media_type="application/json")


@router.post(
    "/{name}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Already finished"}},
)
def cancel_job(
    name: JobName, service: ServiceDep, key: CurrentKey, idempotency_key: IdempotencyKey = None
) -> Job:
    """Stop a job: queued ones end at once, running ones go through CANCELLING."""
    return service.cancel_job_once(name, caller=key, idempotency_key=idempotency_key)


@router.post(
    "/{name}/pause",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "Not running, or ended"},
    },
)
def pause_job(name: JobName, service: ServiceDep, key: CurrentKey) -> Job:
    """Save a complete checkpoint at the next step's end and stop: PAUSING, then PAUSED. A
    paused job holds no slot; `resume` relaunches it from that checkpoint."""
    return service.pause_job(name, caller=key).public()


@router.post(
    "/{name}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Not paused"}},
)
def resume_job(name: JobName, service: ServiceDep, key: CurrentKey) -> Job:
    """Queue a paused job again (PENDING): it continues from its newest complete checkpoint,
    and its metrics continue the same curve."""
    return service.resume_job(name, caller=key).public()


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Still active"}},
)
def delete_job(name: JobName, service: ServiceDep, key: CurrentKey) -> Response:
    """Remove a finished job's record and files."""
    service.delete_job(name, caller=key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{name}/logs",
    response_class=PlainTextResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_logs(
    name: JobName,
    service: ServiceDep,
    key: CurrentKey,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000, description="Last N lines")] = None,
    follow: Annotated[
        bool, Query(description="Keep streaming new output until the job ends (chunked).")
    ] = False,
    raw: Annotated[
        bool,
        Query(description="Keep the trainer's `ainfinity-*` protocol lines (left out by default)."),
    ] = False,
) -> Response:
    """The job's combined stdout and stderr, streamed from disk."""
    if follow:
        chunks = service.follow_logs(name, tail=tail, raw=raw, caller=key, stopping=server_stopping)
        return StreamingResponse(chunks, media_type=_TEXT)
    return StreamingResponse(
        service.read_logs(name, tail=tail, raw=raw, caller=key), media_type=_TEXT
    )


@router.get("/{name}/events", responses=NOT_FOUND)
def get_events(name: JobName, service: ServiceDep, key: CurrentKey) -> EventList:
    """Every state change and user action, oldest first."""
    return EventList(data=service.list_events(name, caller=key))


@router.get("/{name}/metrics", responses=NOT_FOUND)
def get_metrics(name: JobName, service: ServiceDep, key: CurrentKey) -> MetricList:
    """Training metrics, one record per logging step, as the run writes them."""
    return MetricList(data=service.list_metrics(name, caller=key))


@router.get("/{name}/checkpoints", responses=NOT_FOUND)
def get_checkpoints(name: JobName, service: ServiceDep, key: CurrentKey) -> CheckpointList:
    """Checkpoints in the job's output directory with their step and loss, oldest first.

    A relaunch on the same output directory resumes from the newest `complete` one."""
    return CheckpointList(data=service.list_checkpoints(name, caller=key))


@router.get(
    "/{name}/task",
    response_class=Response,
    responses={**NOT_FOUND, 200: {"content": {"application/yaml": {"schema": TASK_SCHEMA}}}},
)
def get_task(name: JobName, service: ServiceDep, key: CurrentKey) -> Response:
    """The rendered SkyPilot task; `sky jobs launch task.yaml` runs it by hand."""
    return Response(service.task_yaml(name, caller=key), media_type="application/yaml")
