"""What happened to a job: its events and its training metrics."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import ConfigDict, Field

from ainfinity.schema.base import PublicModel
from ainfinity.schema.job import JobStatus


class EventType(str, Enum):
    """Kinds of entries in a job's timeline."""

    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    CANCEL_REQUESTED = "cancel_requested"
    PAUSE_REQUESTED = "pause_requested"
    RESUMED = "resumed"
    WEBHOOK_DELIVERED = "webhook_delivered"
    WEBHOOK_FAILED = "webhook_failed"
    MODEL_REGISTERED = "model_registered"
    MODEL_DELETED = "model_deleted"


class Event(PublicModel):
    """One entry of `events.jsonl`."""

    time: datetime
    type: EventType
    status: JobStatus
    message: str
    actor: str


class EventList(PublicModel):
    """A job's events, oldest first."""

    data: list[Event]


class Metric(PublicModel):
    """One logging step of the training run: a training record, or an eval one (`eval_loss`).

    DPO records carry `rewards/chosen`, `rewards/rejected`, `rewards/margins` and
    `rewards/accuracies` (the share of pairs whose chosen answer is rewarded above the other)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)

    step: int
    total_steps: int | None = None
    epoch: float | None = None
    time: datetime
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens: int | None = Field(None, description="Tokens trained on since the previous record.")
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    step_time_seconds: float | None = None
    rewards_chosen: float | None = Field(None, alias="rewards/chosen")
    rewards_rejected: float | None = Field(None, alias="rewards/rejected")
    rewards_margins: float | None = Field(None, alias="rewards/margins")
    rewards_accuracies: float | None = Field(None, alias="rewards/accuracies")


class MetricList(PublicModel):
    """A job's metrics, in step order."""

    data: list[Metric]
