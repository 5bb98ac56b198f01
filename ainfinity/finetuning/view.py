"""A native job seen through OpenAI's fine-tuning shapes: the job, its events, its checkpoints.

How the native statuses read (OpenAI's SDK knows six):

| native                                   | `status`                                |
|------------------------------------------|-----------------------------------------|
| PENDING, while its token lengths are measured | `validating_files`                 |
| PENDING                                  | `queued`                                |
| STARTING, RUNNING, RECOVERING, PAUSING   | `running`                               |
| PAUSED                                   | `queued` (it runs again once resumed)   |
| CANCELLING, CANCELLED                    | `cancelled` (a cancel is never undone)  |
| SUCCEEDED / FAILED                       | `succeeded` / `failed`                  |

`ainfinity_status` carries the native status beside it, so a paused job can be told apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from ainfinity.schema.activity import Event, EventType, Metric
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.schema.openai_fine_tuning import (
    FINE_TUNING_JOB_PREFIX,
    CheckpointMetrics,
    DpoJobHyperparameters,
    DpoJobMethod,
    FineTuningInfo,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobError,
    JobHyperparameters,
    JobMethod,
    SupervisedJobMethod,
)
from ainfinity.serving.model_ids import checkpoint_id, fine_tuned_id
from ainfinity.train.checkpoints import CheckpointInfo

OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]

_STATUS: dict[JobStatus, OpenAIStatus] = {
    JobStatus.PENDING: "queued",
    JobStatus.STARTING: "running",
    JobStatus.RUNNING: "running",
    JobStatus.RECOVERING: "running",
    JobStatus.PAUSING: "running",
    JobStatus.PAUSED: "queued",
    JobStatus.CANCELLING: "cancelled",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def openai_status(record: JobRecord) -> OpenAIStatus:
    stats = record.dataset_stats
    if record.status == JobStatus.PENDING and stats is not None and stats.token_stats == "pending":
        return "validating_files"
    return _STATUS[record.status]


def info_of(record: JobRecord) -> FineTuningInfo:
    assert record.fine_tuning is not None, "only jobs created through /v1 have an OpenAI view"
    return record.fine_tuning


def _seconds(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def job_error(record: JobRecord) -> JobError | None:
    """`failure_reason` (`<code>: <message>`) as OpenAI's error, naming the file at fault."""
    if record.status != JobStatus.FAILED:
        return None
    reason = record.failure_reason or "unknown: the job failed"
    code, _, message = reason.partition(": ")
    param = None
    if code == "invalid_dataset":
        validation = message.startswith("validation_dataset")
        param = "validation_file" if validation else "training_file"
    return JobError(code=code, message=message or reason, param=param)


def trained_tokens(metrics: Iterable[Metric]) -> int | None:
    """Tokens of every training step, each step counted once (a resumed run may log a step
    that the run before it logged too)."""
    per_step = {m.step: m.tokens for m in metrics if m.loss is not None and m.tokens is not None}
    return sum(per_step.values()) if per_step else None


def fine_tuned_model_id(record: JobRecord) -> str:
    """The id the job's model has, or will have once the job succeeds."""
    if record.fine_tuned_model is not None:
        return record.fine_tuned_model
    base = record.training_model.base_model if record.training_model else record.spec.model
    return fine_tuned_id(base, record.name, record.spec.suffix)


def job_view(record: JobRecord, *, metrics: list[Metric] | None) -> FineTuningJob:
    """The OpenAI job; `metrics` (the run's records) are read for finished jobs only."""
    info = info_of(record)
    numbers = {
        "batch_size": info.batch_size,
        "learning_rate_multiplier": info.learning_rate_multiplier,
        "n_epochs": info.n_epochs,
    }
    if info.method == "dpo":
        method = JobMethod(
            type="dpo",
            dpo=DpoJobMethod(hyperparameters=DpoJobHyperparameters(**numbers, beta=info.beta)),
        )
    else:
        method = JobMethod(
            type="supervised",
            supervised=SupervisedJobMethod(hyperparameters=JobHyperparameters(**numbers)),
        )
    progress = record.progress
    estimated = None
    if record.status == JobStatus.RUNNING and progress and progress.eta_seconds is not None:
        estimated = int(record.updated_at.timestamp() + progress.eta_seconds)
    return FineTuningJob(
        id=record.name,
        created_at=int(record.created_at.timestamp()),
        error=job_error(record),
        fine_tuned_model=record.fine_tuned_model,
        finished_at=_seconds(record.finished_at) if record.status.is_terminal else None,
        hyperparameters=JobHyperparameters(**numbers),
        model=info.model,
        organization_id=f"org-{record.owner or 'ainfinity'}",
        seed=info.seed,
        status=openai_status(record),
        trained_tokens=trained_tokens(metrics) if metrics is not None else None,
        training_file=info.training_file,
        validation_file=info.validation_file,
        estimated_finish=estimated,
        metadata=dict(record.spec.metadata) or None,
        method=method,
        user_provided_suffix=record.spec.suffix,
        ainfinity_status=record.status.value,
    )


def _hex(record: JobRecord) -> str:
    return record.name.removeprefix(FINE_TUNING_JOB_PREFIX)


_LEVEL = {JobStatus.FAILED: "error", JobStatus.CANCELLED: "warn"}


def _message_event(record: JobRecord, index: int, event: Event) -> FineTuningJobEvent:
    ended = event.type == EventType.STATUS_CHANGED and event.status.is_terminal
    data: dict[str, Any] = {"status": event.status.value, "event": event.type.value}
    if event.actor:
        data["actor"] = event.actor
    return FineTuningJobEvent(
        id=f"ftevent-{_hex(record)}-e{index}",
        created_at=int(event.time.timestamp()),
        level=_LEVEL.get(event.status, "info") if ended else "info",
        message=event.message,
        type="message",
        data=data,
    )


def _metrics_event(record: JobRecord, index: int, metric: Metric) -> FineTuningJobEvent:
    data: dict[str, Any] = {"step": metric.step, "total_steps": metric.total_steps}
    if metric.loss is not None:
        data["train_loss"] = metric.loss
        where = f"/{metric.total_steps}" if metric.total_steps else ""
        message = f"Step {metric.step}{where}: training loss={metric.loss:.4f}"
    else:
        data["valid_loss"] = data["full_valid_loss"] = metric.eval_loss
        message = f"Step {metric.step}: validation loss={metric.eval_loss}"
    extra = metric.model_dump(
        exclude={"step", "total_steps", "loss", "eval_loss", "time"}, exclude_none=True
    )
    data.update(extra)
    return FineTuningJobEvent(
        id=f"ftevent-{_hex(record)}-m{index}",
        created_at=int(metric.time.timestamp()),
        level="info",
        message=message,
        type="metrics",
        data=data,
    )


def event_views(
    record: JobRecord, events: list[Event], metrics: list[Metric]
) -> list[FineTuningJobEvent]:
    """Status changes and training records, newest first (OpenAI's order)."""
    timed = [(e.time, 0, i, _message_event(record, i, e)) for i, e in enumerate(events)]
    timed += [(m.time, 1, i, _metrics_event(record, i, m)) for i, m in enumerate(metrics)]
    timed.sort(key=lambda item: item[:3], reverse=True)
    return [view for *_, view in timed]


def checkpoint_views(
    record: JobRecord, found: list[CheckpointInfo]
) -> list[FineTuningJobCheckpoint]:
    """The complete checkpoints, newest first, each with the model id `/v1` serves it as."""
    model = fine_tuned_model_id(record)
    return [
        FineTuningJobCheckpoint(
            id=f"ftckpt-{_hex(record)}-{info.step}",
            created_at=int(info.saved_at.timestamp()),
            fine_tuned_model_checkpoint=checkpoint_id(model, info.step),
            fine_tuning_job_id=record.name,
            metrics=CheckpointMetrics(
                step=info.step,
                train_loss=info.loss,
                valid_loss=info.eval_loss,
                full_valid_loss=info.eval_loss,
            ),
            step_number=info.step,
        )
        for info in reversed(found)
        if info.complete
    ]
