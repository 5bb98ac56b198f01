"""What cancel, pause and resume do to a job record, decided under the job's lock.

Each function is the `change` a `JobStore.update` applies: it raises a coded exception when
the request does not fit the job's status, returns None when there is nothing to do (the
request was already made), else the events it adds. Ownership is checked by the caller.
"""

from __future__ import annotations

from ainfinity.exceptions import JobFinished, JobNotPaused, JobNotRunning, PauseNeedsOutputUri
from ainfinity.executors.protocol import Executor
from ainfinity.jobs.transitions import transition, utcnow
from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_files import JobPaths

RUNNING_STATUSES = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.RECOVERING)


def cancel(
    record: JobRecord, *, actor: str, executor: Executor, paths: JobPaths
) -> list[Event] | None:
    """A queued or paused job ends CANCELLED at once; a running one is stopped (CANCELLING)."""
    if record.status.is_terminal:
        raise JobFinished(f"Job {record.name!r} already ended {record.status.value}.")
    if record.status == JobStatus.CANCELLING:
        return None
    record.cancel_requested_at = utcnow()
    events = [
        Event(
            time=record.cancel_requested_at,
            type=EventType.CANCEL_REQUESTED,
            status=record.status,
            message="cancel requested",
            actor=actor,
        )
    ]
    if record.status in (JobStatus.PENDING, JobStatus.PAUSED):
        message = (
            "cancelled before start"
            if record.status == JobStatus.PENDING
            else "cancelled while paused"
        )
        events.append(transition(record, JobStatus.CANCELLED, message=message, actor=actor))
    else:
        executor.cancel(record, paths, force=False)
        events.append(
            transition(record, JobStatus.CANCELLING, message="stopping the job", actor=actor)
        )
    return events


def pause(
    record: JobRecord, *, actor: str, executor: Executor, paths: JobPaths
) -> list[Event] | None:
    """Ask a running job to save a complete checkpoint at its step's end and stop (PAUSING)."""
    name = record.name
    if record.status.is_terminal:
        raise JobFinished(f"Job {name!r} already ended {record.status.value}.")
    if record.status in (JobStatus.PAUSING, JobStatus.PAUSED):
        return None
    if record.status not in RUNNING_STATUSES:
        raise JobNotRunning(
            f"Job {name!r} is {record.status.value}: only a running job can be paused "
            "(a queued one can be cancelled)."
        )
    if record.executor == "skypilot" and record.spec.output_uri is None:
        raise PauseNeedsOutputUri(
            f"Job {name!r} has no output_uri: its checkpoint would be lost with its "
            "cluster. Give SkyPilot jobs an output_uri bucket to pause them."
        )
    record.pause_requested_at = utcnow()
    executor.pause(record, paths)
    return [
        Event(
            time=record.pause_requested_at,
            type=EventType.PAUSE_REQUESTED,
            status=record.status,
            message="pause requested",
            actor=actor,
        ),
        transition(record, JobStatus.PAUSING, message="saving a checkpoint", actor=actor),
    ]


def resume(record: JobRecord, *, actor: str) -> list[Event]:
    """Queue a paused job again (PENDING); it relaunches from its newest checkpoint."""
    if record.status != JobStatus.PAUSED:
        raise JobNotPaused(
            f"Job {record.name!r} is {record.status.value}: only a paused job can be resumed."
        )
    record.pause_requested_at = None
    record.executor_state = {}
    return [
        Event(
            time=utcnow(),
            type=EventType.RESUMED,
            status=record.status,
            message="resume requested",
            actor=actor,
        ),
        transition(
            record,
            JobStatus.PENDING,
            message="queued to resume from its newest checkpoint",
            actor=actor,
        ),
    ]
