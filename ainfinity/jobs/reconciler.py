"""The reconciler: launches queued jobs and moves running ones along with what their
executors observe.

It runs on a timer and after every request, in any number of threads and worker processes:
a mutex and a non-blocking file lock let one pass run at a time, and every change to a job
is made under that job's lock (`JobStore.update`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from ainfinity.core.config import Settings
from ainfinity.exceptions import JobNotFound
from ainfinity.executors.protocol import Executor, LaunchError, Observation
from ainfinity.jobs.event_feed import EventFeed
from ainfinity.jobs.failure import classify_failure
from ainfinity.jobs.progress import progress_from
from ainfinity.jobs.run_output import (
    failure_log,
    last_outcome,
    latest_metrics,
    starting_eval_loss,
)
from ainfinity.jobs.transitions import transition, utcnow
from ainfinity.schema.activity import Event
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.serving.model_records import register_model
from ainfinity.store.job_index import IndexRow
from ainfinity.store.job_store import JobStore
from ainfinity.store.pass_lock import exclusive_pass
from ainfinity.train.checkpoints import latest_complete_checkpoint
from ainfinity.train.protocol import DONE_PREFIX, ERROR_PREFIX

logger = logging.getLogger("ainfinity.service")

_LIVE = (
    JobStatus.STARTING,
    JobStatus.RUNNING,
    JobStatus.RECOVERING,
    JobStatus.PAUSING,
    JobStatus.CANCELLING,
)
# Asked for by a user: what the executor sees does not override them.
_REQUESTED = (JobStatus.PAUSING, JobStatus.CANCELLING)
_STATUS_MESSAGES = {
    JobStatus.STARTING: "job is starting",
    JobStatus.RUNNING: "job is running",
    JobStatus.RECOVERING: "job is recovering from a preemption or failure",
}


class Reconciler:
    """Drives every active job one step further on each pass."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        executors: Mapping[str, Executor],
        wake: Callable[[], None],
        feed: EventFeed,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executors = executors
        self.feed = feed
        # Asks for another pass at once (a job was just launched).
        self.wake = wake
        # Told when a job first reaches STARTING or RUNNING (the launch-latency metric).
        self.on_launch_stage: Callable[[JobRecord], None] = lambda record: None
        self._reconcile_mutex = threading.Lock()

    def startup(self) -> None:
        """Re-derive what is active from the records, then check each job against reality."""
        self.store.rebuild_active()
        self.reconcile()

    def reconcile(self) -> None:
        """One pass: observe every active job, then launch queued ones while there is room.

        Several workers may call this; a file lock lets one pass run at a time."""
        for executor in self.executors.values():
            executor.reap()
        with exclusive_pass(self._reconcile_mutex, self.store.home / "reconcile.lock") as acquired:
            if acquired:
                self._reconcile_locked()

    def _reconcile_locked(self) -> None:
        running: Counter[str] = Counter()
        pending: list[IndexRow] = []
        live: dict[str, list[JobRecord]] = {}
        launched = False
        queued = self._queued_by_index()
        for name in self.store.active_names():
            if name in queued:
                # Queued jobs are not read on every pass: their rows say enough to pick the
                # next one to launch, and `_launch` reads the record under its lock. So a
                # pass costs the same with 10 or 10,000 jobs waiting.
                pending.append(queued[name])
                continue
            try:
                record = self.store.get(name)
            except JobNotFound:
                self.store.release_marker(name)
                continue
            except (ValidationError, OSError):
                # One unreadable job must not stall all the others; it is retried next tick.
                logger.exception("cannot reconcile job", extra={"job": name})
                continue
            if not record.status.is_active:
                self.store.release_marker(name)
            elif record.status == JobStatus.PENDING:
                pending.append(IndexRow.of(record))
            else:
                live.setdefault(record.executor, []).append(record)
        for executor_name, records in live.items():
            executor = self.executors.get(executor_name)
            if executor is not None:
                # One batched look (SkyPilot's queue) for all of the executor's jobs.
                executor.refresh(records)
        for record in (r for records in live.values() for r in records):
            try:
                observed = self._observe(record.name)
                if record.started_at is None and observed.started_at is not None:
                    self.on_launch_stage(observed)
                if not observed.status.is_terminal:
                    running[observed.executor] += 1
            except JobNotFound:
                self.store.release_marker(record.name)
            except (ValidationError, OSError, yaml.YAMLError):
                logger.exception("cannot reconcile job", extra={"job": record.name})
        for row in sorted(pending, key=lambda r: (r.created_us, r.name)):
            executor = self.executors.get(row.executor)
            if executor is None:
                continue
            capacity = executor.capacity()
            if capacity is not None and running[row.executor] >= capacity:
                continue
            try:
                launched_record = self._launch(row.name)
            except JobNotFound:
                self.store.release_marker(row.name)
                continue
            if launched_record.status == JobStatus.STARTING:
                self.on_launch_stage(launched_record)
            # Not launched: still queued, or ended meanwhile (cancelled, or a launch error).
            if launched_record.status != JobStatus.PENDING and not (
                launched_record.status.is_terminal
            ):
                running[row.executor] += 1
                launched = True
        if launched:
            # Look again at once: a launched job is RUNNING as soon as its process is seen.
            self.wake()

    def _queued_by_index(self) -> dict[str, IndexRow]:
        try:
            rows = self.store.index.active_rows()
        except sqlite3.DatabaseError:
            logger.exception("job index unreadable; reading every active job")
            return {}
        return {row.name: row for row in rows if row.status == JobStatus.PENDING.value}

    def _launch(self, name: str) -> JobRecord:
        def change(record: JobRecord) -> list[Event] | None:
            if record.status != JobStatus.PENDING:
                return None  # cancelled meanwhile
            paths = self.store.paths(name)
            task = yaml.safe_load(paths.task.read_text(encoding="utf-8"))
            try:
                record.executor_state = self.executors[record.executor].launch(record, task, paths)
            except (OSError, LaunchError) as exc:
                record.failure_reason = f"launch_error: {exc}"
                return [transition(record, JobStatus.FAILED, message=record.failure_reason)]
            return [transition(record, JobStatus.STARTING, message="job launched")]

        try:
            return self.store.update(name, change)
        except JobNotFound:
            self.store.release_marker(name)
            raise

    def _observe(self, name: str) -> JobRecord:
        def change(record: JobRecord) -> list[Event] | None:
            if record.status not in _LIVE:
                return None
            executor = self.executors[record.executor]
            paths = self.store.paths(name)
            changed = self._refresh_progress(record)
            observation = executor.observe(record, paths)
            if observation.state:
                record.executor_state = {**record.executor_state, **observation.state}
                record.recovery_count = int(
                    record.executor_state.get("recovery_count", record.recovery_count)
                )
                changed = True
            if observation.finished:
                self._refresh_progress(record)  # the run's last records, written at its end
                return self._finish(record, observation)
            status = observation.status
            if status and status != record.status and record.status not in _REQUESTED:
                message = _STATUS_MESSAGES.get(status, f"job is {status.value}")
                if status == JobStatus.RECOVERING:
                    message += f" (recovery {record.recovery_count})"
                return [transition(record, status, message=message)]
            if record.status == JobStatus.CANCELLING and self._grace_over(record):
                if not record.executor_state.get("force_killed"):
                    executor.cancel(record, paths, force=True)
                    record.executor_state["force_killed"] = True
                    return []
            return [] if changed else None

        return self.store.update(name, change)

    def _refresh_progress(self, record: JobRecord) -> bool:
        metrics = self.store.paths(record.name).metrics
        train, evaluation = latest_metrics(metrics)
        progress = progress_from(train, evaluation, previous=record.progress)
        changed = progress is not None and progress != record.progress
        if record.eval_loss_before is None and record.spec.validation_dataset is not None:
            record.eval_loss_before = starting_eval_loss(metrics)
            changed = changed or record.eval_loss_before is not None
        if changed:
            record.progress = progress
            record.updated_at = utcnow()
        # The streams' metric and progress messages, before this update's status event.
        published = self.feed.publish_run_output(record, progress_changed=changed)
        return changed or published

    def _finish(self, record: JobRecord, observation: Observation) -> list[Event]:
        if record.cancel_requested_at is not None:
            return [transition(record, JobStatus.CANCELLED, message="job cancelled")]
        log = self.store.paths(record.name).log
        if record.pause_requested_at is not None:
            # Paused, unless the run ended on its own first (it finished, or it failed).
            outcome = last_outcome(log)
            if outcome not in (DONE_PREFIX, ERROR_PREFIX):
                return [self._paused(record)]
        if observation.returncode == 0:
            self._measure_gain(record)
            succeeded = transition(record, JobStatus.SUCCEEDED, message="job succeeded")
            # In the same write as the status: a SUCCEEDED job always has its model.
            metrics = self.store.paths(record.name).metrics
            return [succeeded, register_model(record, metrics_path=metrics)]
        memory = record.executor_state.get("rss_bytes")
        reason = classify_failure(
            log, observation.returncode, memory_bytes=memory if isinstance(memory, int) else None
        )
        if observation.failure_reason and reason.startswith("unknown:"):
            # The trainer said nothing recognisable; the executor knows more (SkyPilot's view).
            reason = observation.failure_reason
        record.failure_reason = reason
        record.failure_log = failure_log(log)
        return [transition(record, JobStatus.FAILED, message=record.failure_reason)]

    def _paused(self, record: JobRecord) -> Event:
        """Stopped at a complete checkpoint (the newest in its output: resumed from)."""
        checkpoint = latest_complete_checkpoint(Path(record.output_dir))
        where = f" at {checkpoint.name}" if checkpoint is not None else ""
        return transition(record, JobStatus.PAUSED, message=f"job paused{where}")

    def _measure_gain(self, record: JobRecord) -> None:
        """The trained model's validation loss, and what training gained over the start."""
        if record.spec.validation_dataset is None:
            return
        _, evaluation = latest_metrics(self.store.paths(record.name).metrics)
        if evaluation is None or evaluation.step == 0:
            return
        record.eval_loss_after = evaluation.eval_loss
        before, after = record.eval_loss_before, record.eval_loss_after
        if before and after is not None:
            record.eval_gain = round((before - after) / before, 4)

    def _grace_over(self, record: JobRecord) -> bool:
        requested = record.cancel_requested_at
        grace = self.settings.local_cancel_grace_seconds
        return requested is not None and (utcnow() - requested).total_seconds() >= grace
