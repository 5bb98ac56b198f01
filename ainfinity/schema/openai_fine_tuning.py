"""OpenAI's fine-tuning job shapes: the create request, the job, its events and checkpoints.

Field names, types and `object` constants follow the official `openai` SDK's models, so a
client built with `_strict_response_validation=True` parses every answer. Extra fields the
SDK does not know (`ainfinity_status`) are ours; the SDK keeps them as extras.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ainfinity.schema.base import PublicModel

FINE_TUNING_JOB_PREFIX = "ftjob-"
MAX_METADATA_PAIRS = 16

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
# The native job's metadata keys: no characters a shell, a URL or a log line reads.
MetadataKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
MetadataValue = Annotated[str, Field(max_length=512, pattern=_NO_CONTROL)]

Auto = Literal["auto"]


class _Request(BaseModel):
    # OpenAI refuses arguments it does not know; so do we (a typo is not silently dropped).
    model_config = ConfigDict(extra="forbid")


class SupervisedHyperparameters(_Request):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=1000)] = "auto"


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"


class SupervisedMethod(_Request):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(_Request):
    hyperparameters: DpoHyperparameters | None = None


class MethodRequest(_Request):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    # Parsed only to answer with a clear 400: reinforcement fine-tuning needs graders.
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(_Request):
    """Body of `POST /v1/fine_tuning/jobs`."""

    model: str = Field(min_length=1, max_length=512, pattern=_NO_CONTROL)
    training_file: str = Field(min_length=1, max_length=64, pattern=_NO_CONTROL)
    validation_file: str | None = Field(None, min_length=1, max_length=64, pattern=_NO_CONTROL)
    hyperparameters: SupervisedHyperparameters | None = Field(
        None, description="Deprecated by OpenAI in favour of `method`; `method`'s values win."
    )
    method: MethodRequest | None = None
    suffix: str | None = Field(
        None,
        # Part of the model id: no colon, nothing a shell reads.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Up to 64 letters, digits, `.`, `_` or `-`: `ft:<base>:<suffix>:<job>`.",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[MetadataKey, MetadataValue] | None = None
    integrations: list[dict[str, Any]] | None = Field(
        None, description="Not available here: a non-empty list is a 400."
    )

    @field_validator("metadata")
    @classmethod
    def _at_most_16_pairs(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} pairs (got {len(value)})")
        return value


class FineTuningInfo(BaseModel):
    """What the OpenAI view of a job needs beyond the native record, kept in `job.json`."""

    model: str = Field(description="The model as the request named it.")
    training_file: str
    validation_file: str | None = None
    method: Literal["supervised", "dpo"]
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = None
    seed: int


# -- responses ---------------------------------------------------------------------------------


class JobError(PublicModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(PublicModel):
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    n_epochs: int | None = None


class DpoJobHyperparameters(JobHyperparameters):
    beta: float | None = None


class SupervisedJobMethod(PublicModel):
    hyperparameters: JobHyperparameters


class DpoJobMethod(PublicModel):
    hyperparameters: DpoJobHyperparameters


class JobMethod(PublicModel):
    type: Literal["supervised", "dpo"]
    supervised: SupervisedJobMethod | None = None
    dpo: DpoJobMethod | None = None


class FineTuningJob(PublicModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: JobMethod
    user_provided_suffix: str | None = None
    ainfinity_status: str = Field(
        description="The native job's status; `PAUSED` (and `PAUSING`) read as `queued` and "
        "`running` in `status`, which has no paused value in OpenAI's SDK."
    )


class FineTuningJobList(PublicModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(PublicModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class FineTuningJobEventList(PublicModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointMetrics(PublicModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None


class FineTuningJobCheckpoint(PublicModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class FineTuningJobCheckpointList(PublicModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
