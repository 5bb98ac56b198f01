"""Job models: what a client sends to launch one, and what it gets back."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ainfinity.finops.job_costs import job_costs
from ainfinity.schema.base import PublicModel, StrictModel
from ainfinity.schema.openai_fine_tuning import FineTuningInfo
from ainfinity.schema.training_options import (
    DeepSpeedOptions,
    DpoOptions,
    Hyperparameters,
    LoraOptions,
)

JOB_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}$"
# Part of a model id (`ft:<base>:<suffix>:<job>`): no colon, nothing a shell reads.
SUFFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
JOB_NAME_RE = re.compile(JOB_NAME_PATTERN)

# Control characters (NUL, newlines, escapes) have no business in any identifier we pass on.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
# A bucket URI. SkyPilot pastes file-mount sources unquoted into the shell command that
# copies them onto every node (`aws s3 cp <source> <dst>`), so the path inside the bucket
# is limited to characters no shell gives a meaning to (no `;|&$()<>{}*?'"` or spaces).
BUCKET_URI_PATTERN = r"^(s3|gs|r2|cos|oci)://[a-z0-9][a-z0-9._-]*(/[A-Za-z0-9._/=+,@:%-]*)?$"
# An output directory on a filesystem every node of the cluster shares (a Slurm cluster's
# home or scratch), as an absolute `file:///` URI; same characters as a bucket path.
SHARED_DIR_URI_PATTERN = r"^file:///[A-Za-z0-9._=+,@%-][A-Za-z0-9._/=+,@%-]*$"


class JobStatus(str, Enum):
    """Lifecycle of a job; `RECOVERING` is only reported by the SkyPilot executor. A PAUSED
    job has saved a checkpoint and stopped: it holds nothing until it is resumed."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """Queued or running: what the reconciler drives (not ended, not paused)."""
        return not self.is_terminal and self != JobStatus.PAUSED


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


ACCELERATORS_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}(:[1-9][0-9]{0,2})?$"
CLOUD_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
REGION_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"


class Resources(StrictModel):
    """Where the job runs; read by SkyPilot's optimizer."""

    accelerators: str | None = Field(
        None,
        pattern=ACCELERATORS_PATTERN,
        examples=["A100:8"],
    )
    num_nodes: int = Field(1, ge=1, le=512)
    cloud: str | None = Field(None, pattern=CLOUD_PATTERN)
    region: str | None = Field(None, pattern=REGION_PATTERN)
    use_spot: bool = False
    max_restarts_on_errors: int = Field(
        0,
        ge=0,
        le=100,
        description="SkyPilot managed jobs: relaunch this many times after a user-code failure "
        "(preemptions are always recovered).",
    )


def check_webhook_url(value: str) -> str:
    """An http(s) URL with a host and a valid port, free of control characters."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("webhook_url may not contain control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"webhook_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook_url must be an http:// or https:// URL with a host")
    return value


MetadataKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
MetadataValue = Annotated[str, Field(max_length=1024)]


class JobCreate(StrictModel):
    """Body of `POST /api/v1/jobs`."""

    name: str | None = Field(None, pattern=JOB_NAME_PATTERN, examples=["llama-sft-1"])
    model: str = Field(
        min_length=1,
        max_length=512,
        pattern=_NO_CONTROL,
        description="A built-in (`tiny-random-llama`), a fine-tuned model you may see "
        "(`ft:<base>:<job>`, training continues from it), a model in AINFINITY_MODEL_DIRS (by "
        "name or path), or a hub id fetched where the job runs.",
        examples=["tiny-random-llama"],
    )
    dataset: str = Field(
        min_length=1,
        max_length=4096,
        pattern=_NO_CONTROL,
        description="Path of a JSONL file on the server, or a bucket URI (SkyPilot executor).",
        examples=["samples/tiny_sft.jsonl"],
    )
    validation_dataset: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=_NO_CONTROL,
        description="Optional JSONL file of the same format; its loss is reported as eval_loss.",
    )
    output_uri: str | None = Field(
        None,
        max_length=4096,
        pattern=f"{BUCKET_URI_PATTERN}|{SHARED_DIR_URI_PATTERN}",
        description="SkyPilot executor: a bucket mounted as the output directory, so "
        "checkpoints survive preemption and a recovered run resumes from them; or "
        "`file:///dir`, a directory on a filesystem all the cluster's nodes share (Slurm).",
        examples=["s3://my-bucket/runs/llama-sft-1"],
    )
    method: Literal["full", "lora", "dpo"] = Field(
        "full",
        description="`full` or `lora` fine-tuning on text, prompt/completion or chat rows; "
        "`dpo` on preference rows (with `lora` options: LoRA adapters).",
    )
    lora: LoraOptions | None = Field(None, description="With method `lora` (or `dpo`).")
    dpo: DpoOptions | None = Field(None, description="Only with method `dpo`.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    deepspeed: DeepSpeedOptions = Field(default_factory=DeepSpeedOptions)
    resources: Resources = Field(default_factory=Resources)
    executor: Literal["local", "skypilot"] | None = Field(
        None, description="Defaults to the server's AINFINITY_EXECUTOR."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=64)
    suffix: str | None = Field(
        None,
        pattern=SUFFIX_PATTERN,
        description="Added to the model's id: `ft:<base>:<suffix>:<job>`.",
        examples=["support-bot"],
    )
    webhook_url: str | None = Field(
        None,
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s/?#@]+(/[^\s]*)?$",
        description="Called with POST and the job's JSON once it ends (SUCCEEDED, FAILED or "
        "CANCELLED), signed with `X-Ainfinity-Signature` when the server has a webhook secret.",
        examples=["https://ci.example.com/hooks/ainfinity"],
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_has_a_host(cls, value: str | None) -> str | None:
        return check_webhook_url(value) if value is not None else None

    @field_validator("metadata")
    @classmethod
    def _metadata_without_nul(cls, value: dict[str, str]) -> dict[str, str]:
        if any("\x00" in v for v in value.values()):
            raise ValueError("metadata values may not contain NUL bytes")
        return value

    @model_validator(mode="after")
    def _options_match_the_method(self) -> JobCreate:
        if self.lora is not None and self.method not in ("lora", "dpo"):
            raise ValueError("lora options need method 'lora' (or 'dpo')")
        if self.dpo is not None and self.method != "dpo":
            raise ValueError("dpo options need method 'dpo'")
        return self

    @property
    def adapts(self) -> bool:
        """Trains LoRA adapters (method `lora`, or `dpo` with lora options)."""
        return self.method == "lora" or (self.method == "dpo" and self.lora is not None)


class JobSpec(JobCreate):
    """A `JobCreate` after the server filled defaults and resolved paths."""

    name: str = Field(pattern=JOB_NAME_PATTERN)
    executor: Literal["local", "skypilot"]


class Progress(PublicModel):
    """The latest training step reported by the run."""

    step: int
    total_steps: int | None = None
    percent: float | None = Field(None, description="step / total_steps, in percent.")
    loss: float | None = None
    eval_loss: float | None = Field(None, description="The latest validation loss.")
    eta_seconds: float | None = Field(None, description="From the measured step time.")
    tokens_per_second: float | None = None


class DatasetStats(PublicModel):
    """What validation found in a dataset; token figures are lengths before truncation.

    Token figures are measured just after the job is accepted, with the job's own tokenizer
    (`token_stats: pending` until then). They stay null (`unavailable`) when the server cannot
    load the tokenizer (a hub model not in its cache): the trainer then prints them in the
    job's log.
    """

    rows: int
    format: str | None
    max_seq_length: int
    token_stats: Literal["pending", "measured", "unavailable"] = "measured"
    token_min: int | None = None
    token_mean: float | None = None
    token_p95: int | None = None
    token_max: int | None = None
    truncated_rows: int | None = Field(None, description="Rows longer than max_seq_length.")


class Checkpoint(PublicModel):
    """A checkpoint in the job's output directory; only complete ones are resumed from."""

    name: str
    step: int
    loss: float | None = None
    eval_loss: float | None = None
    complete: bool
    saved_at: datetime


class CheckpointList(PublicModel):
    """A job's checkpoints, oldest first."""

    data: list[Checkpoint]


class Job(PublicModel):
    """A job as the API shows it."""

    name: str
    status: JobStatus
    executor: str
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure_reason: str | None = None
    failure_log: list[str] | None = Field(None, description="The last lines of a failed run.")
    recovery_count: int = Field(0, description="SkyPilot: times the job was recovered.")
    progress: Progress | None = None
    dataset_stats: DatasetStats | None = None
    validation_dataset_stats: DatasetStats | None = None
    output_dir: str
    eval_loss_before: float | None = Field(
        None, description="With a validation set: the starting model's validation loss."
    )
    eval_loss_after: float | None = Field(
        None, description="The trained model's validation loss (set when the job SUCCEEDED)."
    )
    eval_gain: float | None = Field(
        None, description="(before - after) / before: the share of the loss training removed."
    )
    lora_target_modules: list[str] | None = Field(
        None,
        description="The layers a LoRA job adapts (null: not known until it loads its model).",
    )
    fine_tuned_model: str | None = Field(
        None,
        description="The model this job registered when it SUCCEEDED (`ft:<base>:<job>`), "
        "served at /v1; null before, or once the model was deleted.",
    )
    cost_per_hour: float | None = Field(
        None,
        description="SkyPilot jobs: USD per hour of the cluster the job ran on (all its "
        "nodes), at SkyPilot's catalog price, spot or on-demand; null when unpriced.",
    )
    cost_to_date: float | None = Field(
        None, description="SkyPilot jobs: cost_per_hour over the time the cluster ran it."
    )


class WebhookDelivery(PublicModel):
    """The one delivery of a finished job's webhook: armed with the terminal status,
    claimed by one worker at a time (`lease_until`), settled as delivered or failed."""

    delivery_id: str
    event: str
    state: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    next_attempt_at: datetime
    lease_until: datetime | None = None


class TrainingModel(PublicModel):
    """What a job trains from, resolved at creation: what the trainer loads, and the root base
    model whose name goes into the fine-tuned model's id."""

    load: str = Field(description="A built-in name, a model directory, or a hub id.")
    adapter: str | None = Field(None, description="A LoRA adapter directory applied over it.")
    model_seed: int | None = Field(None, description="The seed a built-in's weights came from.")
    tokenizer: str = Field(description="Where the tokenizer (and chat template) is read from.")
    base_model: str = Field(description="The first base model of the lineage.")


class RegisteredModel(PublicModel):
    """Facts about the model a SUCCEEDED job registered, taken when it was registered."""

    registered_at: datetime
    size_bytes: int
    train_loss: float | None = None
    eval_loss: float | None = None


_PUBLIC_FIELDS = set(Job.model_fields)


class JobRecord(Job):
    """What `job.json` holds: the public job plus what only the server needs."""

    owner: str | None = None
    executor_state: dict[str, Any] = Field(default_factory=dict)
    cancel_requested_at: datetime | None = None
    pause_requested_at: datetime | None = None
    # How far into metrics.jsonl the event journal has published metric records (bytes).
    metrics_published: int = 0
    webhook: WebhookDelivery | None = None
    training_model: TrainingModel | None = None
    registered_model: RegisteredModel | None = None
    dataset_sha256: str | None = None
    validation_dataset_sha256: str | None = None
    # Set for a job created through `/v1/fine_tuning/jobs`: its OpenAI view.
    fine_tuning: FineTuningInfo | None = None

    def public(self) -> Job:
        return Job.model_validate({**self.model_dump(include=_PUBLIC_FIELDS), **self._costs()})

    def public_json(self) -> bytes:
        """The public job as JSON, without building a `Job` first (the hot read path)."""
        if "cluster" in self.executor_state:
            return self.public().model_dump_json().encode()
        return self.model_dump_json(include=_PUBLIC_FIELDS).encode()

    def _costs(self) -> dict[str, float | None]:
        # Counted at read time: a running job's cost grows between two writes of its record.
        return job_costs(
            self.executor_state, finished_at=self.finished_at, now=datetime.now(timezone.utc)
        )


class JobList(PublicModel):
    """One page of jobs, newest first."""

    data: list[Job]
    has_more: bool
    next_cursor: str | None = None
