"""What happened to a job: its events and its training metrics."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from ainfinity.schema.base import PublicModel
from ainfinity.schema.job import JobStatus


class EventType(str, Enum):
    """Kinds of entries in a job's timeline."""

    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    CANCEL_REQUESTED = "cancel_requested"


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
    """One logging step of the training run."""

    step: int
    loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    time: datetime
    total_steps: int | None = None
    grad_norm: float | None = None


class MetricList(PublicModel):
    """A job's metrics, in step order."""

    data: list[Metric]
