"""The event feed: what the Server-Sent Event streams send, written to and read from the
event journal (`ainfinity.store.journal`).

Three kinds of message, each with the journal id of its line:
- `status`: `{"job", "event"}` for every event a job logs (`events.jsonl`), written by a
  store hook next to the event itself;
- `progress`: `{"job", "status", "progress"}` whenever the reconciler sees a job's
  progress change;
- `metric`: `{"job", "metric"}` for each record the run appends to `metrics.jsonl`,
  published by the reconciler, which remembers how far it got (`metrics_published`).

The reconciler writes a job's progress and metric lines under the job's lock and before the
status line of the same update, so a job's terminal status is the last line of its run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import JobNotFound
from ainfinity.schema.activity import Event, EventType, Metric
from ainfinity.schema.job import JobRecord
from ainfinity.store.job_store import JobStore
from ainfinity.store.journal import Journal, JournalEntry, entry_line, job_prefix

logger = logging.getLogger("ainfinity.feed")

# In each job's directory: the journal offset of its `created` line, where its replay starts.
START_FILE = "journal_start"


@dataclass(frozen=True)
class FeedMessage:
    """One message of a stream; `kind` and `data` are None for a bare id (see `global_stream`)."""

    id: int
    kind: str | None = None
    data: dict[str, Any] | None = None


def _json(model: BaseModel) -> dict[str, Any]:
    # Through pydantic's JSON: NaN and infinities become null, as in the API's answers.
    data: dict[str, Any] = json.loads(model.model_dump_json())
    return data


class EventFeed:
    """Publishes to the journal and streams from it."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.journal = Journal(store.home / "journal.jsonl")

    # -- publishing ------------------------------------------------------------------------

    def on_write(self, record: JobRecord, events: list[Event]) -> None:
        """Store hook: a `status` line for each event just logged."""
        if not events:
            return
        lines = [
            entry_line(
                record.name, record.owner, "status", {"job": record.name, "event": _json(event)}
            )
            for event in events
        ]
        try:
            start = self.journal.append(lines)
            if events[0].type == EventType.CREATED:
                # Not atomic, on purpose (no fsyncs on the create path): a reader that
                # catches it half written falls back to scanning from the journal's start.
                (self.store.paths(record.name).root / START_FILE).write_text(str(start))
        except OSError:
            # Streams miss these lines; the job and its events.jsonl are written regardless.
            logger.exception("cannot write the event journal", extra={"job": record.name})

    def publish_run_output(self, record: JobRecord, *, progress_changed: bool) -> bool:
        """Journal the run's metric records not yet published, and the progress if it
        changed (called by the reconciler under the job's lock, the record about to be
        written). Returns whether the record changed (`metrics_published` moved)."""
        path = self.store.paths(record.name).metrics
        metrics, end = _new_metrics(path, record.metrics_published)
        lines = [
            entry_line(
                record.name, record.owner, "metric", {"job": record.name, "metric": _json(m)}
            )
            for m in metrics
        ]
        if progress_changed:
            data = {
                "job": record.name,
                "status": record.status.value,
                "progress": _json(record.progress) if record.progress else None,
            }
            lines.append(entry_line(record.name, record.owner, "progress", data))
        if lines:
            try:
                self.journal.append(lines)
            except OSError:
                logger.exception("cannot write the event journal", extra={"job": record.name})
                return False
        moved = end != record.metrics_published
        record.metrics_published = end
        return moved

    # -- streaming ---------------------------------------------------------------------------

    def job_start(self, name: str) -> int:
        """Where the job's lines start in the journal (0 when unknown: a job older than the
        journal, or a crash between its creation and its first line)."""
        try:
            return int((self.store.paths(name).root / START_FILE).read_text())
        except (OSError, ValueError):
            return 0

    def resume_point(self, last_event_id: int | None, *, default: int) -> int:
        """Where a stream starts: just after `last_event_id`, or `default` without one or
        for an id beyond the journal's end (not one of this journal's)."""
        if last_event_id is None or last_event_id > self.journal.size():
            return default
        return self.journal.align(last_event_id)

    async def job_stream(
        self, record: JobRecord, *, start: int, stopping: Callable[[], bool]
    ) -> AsyncIterator[FeedMessage]:
        """One job's messages from `start`; ends once the job has ended (or is gone) and
        every line about it was sent, including its webhook delivery's."""
        prefix = job_prefix(record.name)
        position = start
        while not stopping():
            # The record first, then the journal: a record that says "ended" was written
            # after all its lines, so the read below reaches them.
            done = self._job_done(record)
            entries, position, at_end = self.journal.read(position, prefix=prefix)
            for entry in entries:
                if entry.job == record.name and entry.owner == record.owner:
                    yield _message(entry)
            if done and at_end:
                return
            # Catching up on a long journal yields to the loop between reads too.
            await asyncio.sleep(self.settings.stream_poll_seconds if at_end else 0)

    async def global_stream(
        self, caller: ApiKey, *, start: int, announce: bool, stopping: Callable[[], bool]
    ) -> AsyncIterator[FeedMessage]:
        """Every job's messages the caller may see, from `start`, until the client leaves.

        With `announce`, a bare id comes first: an SSE client that then loses the connection
        before any message resumes from here (the SSE spec dispatches no event for it)."""
        if announce:
            yield FeedMessage(id=start)
        position = start
        while not stopping():
            entries, position, at_end = self.journal.read(position)
            for entry in entries:
                if caller.role == "admin" or entry.owner == caller.name:
                    yield _message(entry)
            await asyncio.sleep(self.settings.stream_poll_seconds if at_end else 0)

    def _job_done(self, watched: JobRecord) -> bool:
        try:
            current = self.store.get(watched.name)
        except (JobNotFound, ValidationError, OSError):
            return True
        if current.created_at != watched.created_at:
            return True  # deleted, and the name taken by another job
        webhook_pending = current.webhook is not None and current.webhook.state == "pending"
        # A paused job's stream ends too: a resume starts a new run (resumable by id).
        return not current.status.is_active and not webhook_pending


def _message(entry: JournalEntry) -> FeedMessage:
    return FeedMessage(id=entry.id, kind=entry.kind, data=entry.data)


def _new_metrics(path: Path, offset: int) -> tuple[list[Metric], int]:
    """Metric records in complete lines from `offset`, and where they end."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0  # a new file (a relaunched run): start it over
            fh.seek(offset)
            data = fh.read(size - offset)
    except FileNotFoundError:
        return [], offset
    complete = data.rfind(b"\n") + 1
    metrics = []
    for line in data[:complete].splitlines():
        with contextlib.suppress(ValidationError):
            metrics.append(Metric.model_validate_json(line))
    return metrics, offset + complete
