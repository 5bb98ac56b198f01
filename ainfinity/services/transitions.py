"""Status changes of a job record, and the event each one logs."""

from __future__ import annotations

from datetime import datetime, timezone

from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, JobStatus

SYSTEM_ACTOR = "system"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def transition(
    record: JobRecord, status: JobStatus, *, message: str, actor: str = SYSTEM_ACTOR
) -> Event:
    """Move a record to `status`, keeping its timestamps right; returns the event to log."""
    now = utcnow()
    record.status = status
    record.updated_at = now
    if status == JobStatus.RUNNING and record.started_at is None:
        record.started_at = now
    if status.is_terminal:
        record.finished_at = now
    return Event(
        time=now, type=EventType.STATUS_CHANGED, status=status, message=message, actor=actor
    )
