"""`/v1/fine_tuning/jobs`: OpenAI's fine-tuning API; each job is a native job (`ftjob-...`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from ainfinity.api.dependencies import CurrentKey, FineTuningDep
from ainfinity.exceptions import InvalidRequest
from ainfinity.schema.openai import OpenAIError
from ainfinity.schema.openai_fine_tuning import (
    MAX_METADATA_PAIRS,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobCreate,
    FineTuningJobEventList,
    FineTuningJobList,
)

router = APIRouter(prefix="/fine_tuning/jobs", tags=["openai"])

JobId = Annotated[str, Path(min_length=1, max_length=64, description="`ftjob-...`")]
After = Annotated[str | None, Query(max_length=128, description="The last id of the page before.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": OpenAIError, "description": "No such job (or not yours)"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": OpenAIError, "description": "Not possible in the job's state"}
}
_METADATA_QUERY = {
    "parameters": [
        {
            "name": "metadata",
            "in": "query",
            "required": False,
            "style": "deepObject",
            "explode": True,
            "description": "`metadata[k]=v` keeps jobs with every pair given; the literal "
            "`metadata=null` keeps jobs without metadata.",
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    ]
}


@router.post(
    "",
    responses={
        400: {"model": OpenAIError, "description": "A bad parameter (named in `param`)"},
        507: {"model": OpenAIError, "description": "The disk is full"},
    },
)
def create_job(
    body: FineTuningJobCreate, fine_tuning: FineTuningDep, key: CurrentKey
) -> FineTuningJob:
    """Fine-tune `model` on an uploaded file: a native job named after the `ftjob-...` id,
    with `"auto"` values resolved by the rules in docs/OPENAI.md."""
    return fine_tuning.create(body, caller=key)


@router.get("", openapi_extra=_METADATA_QUERY)
def list_jobs(
    request: Request,
    fine_tuning: FineTuningDep,
    key: CurrentKey,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobList:
    """Your fine-tuning jobs, newest first."""
    jobs, more = fine_tuning.list_jobs(
        caller=key, after=after, limit=limit, metadata=_metadata_filter(request)
    )
    return FineTuningJobList(data=jobs, has_more=more)


@router.get("/{fine_tuning_job_id}", responses=NOT_FOUND)
def retrieve_job(
    fine_tuning_job_id: JobId, fine_tuning: FineTuningDep, key: CurrentKey
) -> FineTuningJob:
    return fine_tuning.get(fine_tuning_job_id, caller=key)


@router.post("/{fine_tuning_job_id}/cancel", responses={**NOT_FOUND, **CONFLICT})
def cancel_job(
    fine_tuning_job_id: JobId, fine_tuning: FineTuningDep, key: CurrentKey
) -> FineTuningJob:
    """Cancel a job that has not ended; it reads `cancelled` at once."""
    return fine_tuning.cancel(fine_tuning_job_id, caller=key)


@router.post("/{fine_tuning_job_id}/pause", responses={**NOT_FOUND, **CONFLICT})
def pause_job(
    fine_tuning_job_id: JobId, fine_tuning: FineTuningDep, key: CurrentKey
) -> FineTuningJob:
    """Save a checkpoint at the end of the current step and stop; the job then reads
    `queued` with `ainfinity_status: PAUSED` until it is resumed."""
    return fine_tuning.pause(fine_tuning_job_id, caller=key)


@router.post("/{fine_tuning_job_id}/resume", responses={**NOT_FOUND, **CONFLICT})
def resume_job(
    fine_tuning_job_id: JobId, fine_tuning: FineTuningDep, key: CurrentKey
) -> FineTuningJob:
    """Run a paused job again from its newest complete checkpoint."""
    return fine_tuning.resume(fine_tuning_job_id, caller=key)


@router.get("/{fine_tuning_job_id}/events", responses=NOT_FOUND)
def list_events(
    fine_tuning_job_id: JobId,
    fine_tuning: FineTuningDep,
    key: CurrentKey,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> FineTuningJobEventList:
    """Status changes (`message`) and training records (`metrics`, with `data`), newest first."""
    events, more = fine_tuning.events(fine_tuning_job_id, caller=key, after=after, limit=limit)
    return FineTuningJobEventList(data=events, has_more=more)


@router.get("/{fine_tuning_job_id}/checkpoints", responses=NOT_FOUND)
def list_checkpoints(
    fine_tuning_job_id: JobId,
    fine_tuning: FineTuningDep,
    key: CurrentKey,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> FineTuningJobCheckpointList:
    """The complete checkpoints, newest first; each one's `fine_tuned_model_checkpoint` is
    a model `/v1/chat/completions` serves once the job has succeeded."""
    found, more = fine_tuning.checkpoints(fine_tuning_job_id, caller=key, after=after, limit=limit)
    return FineTuningJobCheckpointList(
        data=found,
        has_more=more,
        first_id=found[0].id if found else None,
        last_id=found[-1].id if found else None,
    )


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """`metadata[k]=v` pairs, `{}` for `metadata=null`, None for no filter."""
    pairs: dict[str, str] = {}
    null = False
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            if value != "null":
                raise InvalidRequest("metadata: use metadata[key]=value, or metadata=null.",
                                     param="metadata")  # fmt: skip
            null = True
        elif name.startswith("metadata[") and name.endswith("]") and len(name) > 10:
            pairs[name[len("metadata[") : -1]] = value
    if null and pairs:
        raise InvalidRequest(
            "metadata: give metadata[key]=value pairs or metadata=null, not both.",
            param="metadata",
        )
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"metadata: at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    return {} if null else (pairs or None)
