"""Models as `/api/v1/models` shows them: base models, and what each SUCCEEDED job produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ainfinity.schema.base import PublicModel, StrictModel


class ModelMetrics(PublicModel):
    """The run's last training loss and last validation loss; with a validation set, the
    starting model's too, and the relative gain."""

    train_loss: float | None = None
    eval_loss: float | None = None
    eval_loss_before: float | None = None
    eval_gain: float | None = None


class ModelLineage(PublicModel):
    """What the model was trained on, and how."""

    dataset: str
    dataset_sha256: str | None = Field(None, description="Of the file when the job was created.")
    validation_dataset: str | None = None
    validation_dataset_sha256: str | None = None
    hyperparameters: dict[str, Any]
    lora: dict[str, Any] | None = None


class Model(PublicModel):
    """A model `/v1` can serve. Base models have no job, owner, method, metrics or lineage."""

    id: str = Field(examples=["ft:tiny-random-llama:quickstart"])
    base_model: str | None = Field(None, description="What the job trained from.")
    job: str | None = Field(None, description="The job that produced it; null for a base model.")
    method: Literal["full", "lora", "dpo"] | None = None
    created_at: datetime
    owner: str | None = None
    path: str | None = Field(None, description="Where its files are; null for a built-in.")
    size_bytes: int | None = Field(None, description="Its weights, config and tokenizer files.")
    metrics: ModelMetrics | None = None
    lineage: ModelLineage | None = None
    checkpoints: list[str] = Field(
        default_factory=list, description="Ids of the run's complete checkpoints, oldest first."
    )


class ModelList(PublicModel):
    """One page of models, newest first."""

    data: list[Model]
    has_more: bool
    next_cursor: str | None = None


class UnloadRequest(StrictModel):
    """Body of `POST /api/v1/serving/unload`."""

    model: str = Field(min_length=1, max_length=512)


class UnloadResult(PublicModel):
    model: str
    unloaded: bool = Field(description="False when it was not loaded.")


class LoadedModel(PublicModel):
    id: str
    loaded_at: datetime
    last_used_at: datetime
    requests: int
    parameter_bytes: int


class WorkerCrash(PublicModel):
    time: datetime
    reason: str
    log_tail: list[str] = Field(default_factory=list)


class WorkerStatus(PublicModel):
    """The inference worker, as the control plane sees it and as it reports itself."""

    id: int
    status: Literal["stopped", "starting", "ready", "restarting", "failed"]
    pid: int | None = None
    started_at: datetime | None = None
    restarts: int = 0
    crashes: list[WorkerCrash] = Field(default_factory=list, description="The latest, newest last.")
    loaded_models: list[LoadedModel] = Field(default_factory=list)
    rss_bytes: int | None = None
    requests_served: int = 0
    tokens_generated: int = 0
    in_flight: int = 0


class ServingStatus(PublicModel):
    """`GET /api/v1/serving`."""

    workers: list[WorkerStatus]
    max_models: int
    max_concurrency: int
    max_queue: int
    active_requests: int = Field(description="Generating now, through this API process.")
    queued_requests: int = Field(description="Waiting for a slot, in this API process.")
