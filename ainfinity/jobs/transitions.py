"""Status changes of a job record, and the event each one logs."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, JobStatus, WebhookDelivery

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
        if record.spec.webhook_url and record.webhook is None:
            # Armed in the same write as the terminal status: a crash cannot lose it.
            record.webhook = WebhookDelivery(
                delivery_id=uuid.uuid4().hex,
                event=f"job.{status.value.lower()}",
                next_attempt_at=now,
            )
    return Event(
        time=now, type=EventType.STATUS_CHANGED, status=status, message=message, actor=actor
    )
