"""SkyPilotService: turns job requests into rendered SkyPilot tasks and drives them to the end.

It knows nothing of HTTP. Requests (create, cancel, delete) are decided here under the
job's lock; the reconciler - run on a timer and after every request - launches queued
jobs and moves running ones along with what their executor observes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import (
    InvalidCursor,
    InvalidDataset,
    InvalidSpec,
    JobActive,
    JobExists,
    JobFinished,
    JobNotFound,
    NotImplementedYet,
)
from ainfinity.idempotency import IdempotencyKeys, fingerprint
from ainfinity.schema.activity import Event, EventType, Metric
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import Checkpoint, Job, JobCreate, JobRecord, JobSpec, JobStatus
from ainfinity.services.dataset_stats import describe_dataset
from ainfinity.services.executor import Executor, LaunchError, Observation
from ainfinity.services.failure import classify_failure
from ainfinity.services.job_inputs import resolve_dataset, resolve_model
from ainfinity.services.progress import progress_from
from ainfinity.services.run_output import failure_log, latest_metrics, read_log, read_metrics
from ainfinity.services.sky_catalog import estimate_cost, validate_task
from ainfinity.services.task_render import dump_job_config, dump_task, render_job
from ainfinity.store import JobPage, JobPaths, JobStore, decode_cursor
from ainfinity.train.checkpoints import list_checkpoints

logger = logging.getLogger("ainfinity.service")

SYSTEM_ACTOR = "system"
_LIVE = (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.RECOVERING, JobStatus.CANCELLING)
_STATUS_MESSAGES = {
    JobStatus.STARTING: "job is starting",
    JobStatus.RUNNING: "job is running",
    JobStatus.RECOVERING: "job is recovering from a preemption or failure",
}


def _may_see(caller: ApiKey, record: JobRecord) -> bool:
    """Admins see every job; a user sees the jobs created with its own key."""
    return caller.role == "admin" or record.owner == caller.name


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def generate_name() -> str:
    return f"job-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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


class SkyPilotService:
    """The control plane's decisions about jobs."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        executors: Mapping[str, Executor],
        template: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.store = store
        self.executors = executors
        self.template = template
        # Set by the app to wake its reconciler loop early (after a create or cancel).
        self.on_change: Callable[[], None] = lambda: None
        self.idempotency = IdempotencyKeys(store.home)
        self._reconcile_mutex = threading.Lock()
        for executor in executors.values():
            executor.notify = self._notify

    def _notify(self) -> None:
        self.on_change()

    # -- requests --------------------------------------------------------------------------

    def create_job(self, request: JobCreate, *, actor: str) -> JobRecord:
        executor_name = request.executor or self.settings.executor
        if executor_name not in self.executors:
            raise NotImplementedYet(f"The {executor_name} executor is not available yet.")
        if executor_name == "local" and request.resources.num_nodes != 1:
            raise InvalidSpec("The local executor runs one node; num_nodes must be 1.")
        if executor_name == "local" and request.output_uri is not None:
            raise InvalidSpec("output_uri needs the skypilot executor; local jobs write locally.")
        name = request.name or generate_name()
        # Early answer for a taken name, before the dataset is read row by row; the store's
        # create() is what guarantees uniqueness against concurrent creators.
        if self.store.exists(name):
            raise JobExists(f"A job named {name!r} already exists.")
        model = resolve_model(request.model)
        allowed = self.settings.data_dirs
        dataset = resolve_dataset(request.dataset, executor=executor_name, allowed_dirs=allowed)
        validation = (
            resolve_dataset(
                request.validation_dataset,
                executor=executor_name,
                allowed_dirs=allowed,
                field="validation_dataset",
            )
            if request.validation_dataset is not None
            else None
        )
        if validation is not None and dataset.report and validation.report:
            if validation.report.format != dataset.report.format:
                raise InvalidDataset(
                    f"The validation dataset is {validation.report.format!r} data but the "
                    f"dataset is {dataset.report.format!r}; use one format for both."
                )
        spec = JobSpec.model_validate(
            {
                **request.model_dump(),
                "name": name,
                "executor": executor_name,
                "model": model,
                "dataset": dataset.location,
                "validation_dataset": validation.location if validation else None,
            }
        )
        hyperparameters = spec.hyperparameters
        paths = self.store.paths(name)
        rendered = render_job(self.template, spec, paths, pip_spec=self.settings.skypilot_pip_spec)
        if executor_name == "skypilot":
            # SkyPilot's own check, now: a task it would refuse is a 422, not a failed launch.
            validate_task(rendered.task)
        now = utcnow()
        record = JobRecord(
            name=name,
            status=JobStatus.PENDING,
            executor=executor_name,
            spec=spec,
            created_at=now,
            updated_at=now,
            output_dir=rendered.output_dir,
            owner=actor,
            dataset_stats=describe_dataset(dataset, model=model, hyperparameters=hyperparameters),
            validation_dataset_stats=(
                describe_dataset(validation, model=model, hyperparameters=hyperparameters)
                if validation is not None
                else None
            ),
        )
        created = Event(
            time=now,
            type=EventType.CREATED,
            status=JobStatus.PENDING,
            message=f"job created for the {executor_name} executor",
            actor=actor,
        )
        self.store.create(
            record,
            created,
            files={
                "task.yaml": dump_task(rendered.task).encode(),
                "workdir/job_config.json": dump_job_config(rendered.job_config),
            },
        )
        logger.info("job created", extra={"job": name, "actor": actor})
        self.on_change()
        return record

    def create_job_once(
        self, request: JobCreate, *, caller: ApiKey, idempotency_key: str | None
    ) -> Job:
        """`create_job`, answered from memory when the caller retries with the same key."""
        if idempotency_key is None:
            return self.create_job(request, actor=caller.name).public()
        answer = self.idempotency.run(
            caller=caller.name,
            key=idempotency_key,
            operation="create",
            body_fingerprint=fingerprint(request.model_dump(mode="json")),
            act=lambda: (
                self.create_job(request, actor=caller.name).public().model_dump(mode="json")
            ),
        )
        return Job.model_validate(answer)

    def cancel_job_once(self, name: str, *, caller: ApiKey, idempotency_key: str | None) -> Job:
        """`cancel_job`, answered from memory when the caller retries with the same key."""
        if idempotency_key is None:
            return self.cancel_job(name, caller=caller).public()
        answer = self.idempotency.run(
            caller=caller.name,
            key=idempotency_key,
            operation=f"cancel {name}",
            body_fingerprint="",
            act=lambda: self.cancel_job(name, caller=caller).public().model_dump(mode="json"),
        )
        return Job.model_validate(answer)

    def get_job(self, name: str, *, caller: ApiKey) -> JobRecord:
        record = self.store.get(name)
        if not _may_see(caller, record):
            # Another user's job does not exist for this caller: 404, never 403.
            raise JobNotFound(f"No job named {name!r}.")
        return record

    def list_jobs(
        self, *, limit: int, cursor: str | None, status: JobStatus | None, caller: ApiKey
    ) -> JobPage:
        if cursor is not None and decode_cursor(cursor) is None:
            raise InvalidCursor()
        owner = None if caller.role == "admin" else caller.name
        return self.store.list_jobs(limit=limit, cursor=cursor, status=status, owner=owner)

    def cancel_job(self, name: str, *, caller: ApiKey) -> JobRecord:
        self.get_job(name, caller=caller)
        actor = caller.name

        def change(record: JobRecord) -> list[Event] | None:
            if record.status.is_terminal:
                raise JobFinished(f"Job {name!r} already ended {record.status.value}.")
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
            if record.status == JobStatus.PENDING:
                events.append(
                    transition(
                        record, JobStatus.CANCELLED, message="cancelled before start", actor=actor
                    )
                )
            else:
                self.executors[record.executor].cancel(record, self.store.paths(name), force=False)
                events.append(
                    transition(
                        record, JobStatus.CANCELLING, message="stopping the job", actor=actor
                    )
                )
            return events

        record = self.store.update(name, change)
        logger.info("job cancel requested", extra={"job": name, "actor": actor})
        self.on_change()
        return record

    def delete_job(self, name: str, *, caller: ApiKey) -> None:
        actor = caller.name

        def allowed(record: JobRecord) -> None:
            if not _may_see(caller, record):
                raise JobNotFound(f"No job named {name!r}.")
            if not record.status.is_terminal:
                raise JobActive(f"Job {name!r} is {record.status.value}; cancel it first.")

        self.store.delete(name, allowed=allowed)
        logger.info("job deleted", extra={"job": name, "actor": actor})

    def read_logs(self, name: str, *, tail: int | None, caller: ApiKey) -> str:
        return read_log(self._visible(name, caller).log, tail)

    def list_events(self, name: str, *, caller: ApiKey) -> list[Event]:
        self._visible(name, caller)
        return self.store.read_events(name)

    def list_metrics(self, name: str, *, caller: ApiKey) -> list[Metric]:
        return read_metrics(self._visible(name, caller).metrics)

    def list_checkpoints(self, name: str, *, caller: ApiKey) -> list[Checkpoint]:
        record = self.get_job(name, caller=caller)
        return [
            # The API shows everything the trainer's listing has but the server-side path.
            Checkpoint.model_validate(found, from_attributes=True)
            for found in list_checkpoints(Path(record.output_dir))
        ]

    def task_yaml(self, name: str, *, caller: ApiKey) -> str:
        return self._visible(name, caller).task.read_text(encoding="utf-8")

    def _visible(self, name: str, caller: ApiKey) -> JobPaths:
        """The paths of a job the caller may see (404 otherwise)."""
        self.get_job(name, caller=caller)
        return self.store.paths(name)

    # -- reconciliation --------------------------------------------------------------------

    def startup(self) -> None:
        """Re-derive what is active from the records, then check each job against reality."""
        self.store.rebuild_active()
        self.reconcile()

    def reconcile(self) -> None:
        """One pass: observe every active job, then launch queued ones while there is room.

        Several workers may call this; a file lock lets one pass run at a time."""
        for executor in self.executors.values():
            executor.reap()
        with self._exclusive_pass() as acquired:
            if acquired:
                self._reconcile_locked()

    @contextlib.contextmanager
    def _exclusive_pass(self) -> Iterator[bool]:
        if not self._reconcile_mutex.acquire(blocking=False):
            yield False
            return
        try:
            fd = os.open(self.store.home / "reconcile.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)
        finally:
            self._reconcile_mutex.release()

    def _reconcile_locked(self) -> None:
        running: Counter[str] = Counter()
        pending: list[JobRecord] = []
        live: dict[str, list[JobRecord]] = {}
        launched = False
        for name in self.store.active_names():
            try:
                record = self.store.get(name)
            except JobNotFound:
                self.store.release_marker(name)
                continue
            except (ValidationError, OSError):
                # One unreadable job must not stall all the others; it is retried next tick.
                logger.exception("cannot reconcile job", extra={"job": name})
                continue
            if record.status.is_terminal:
                self.store.release_marker(name)
            elif record.status == JobStatus.PENDING:
                pending.append(record)
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
                if not observed.status.is_terminal:
                    running[observed.executor] += 1
            except JobNotFound:
                self.store.release_marker(record.name)
            except (ValidationError, OSError, yaml.YAMLError):
                logger.exception("cannot reconcile job", extra={"job": record.name})
        for record in sorted(pending, key=lambda r: (r.created_at, r.name)):
            executor = self.executors.get(record.executor)
            if executor is None:
                continue
            capacity = executor.capacity()
            if capacity is not None and running[record.executor] >= capacity:
                continue
            if self._launch(record.name).status != JobStatus.PENDING:
                running[record.executor] += 1
                launched = True
        if launched:
            # Look again at once: a launched job is RUNNING as soon as its process is seen.
            self.on_change()

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
                return [self._finish(record, observation)]
            status = observation.status
            if status and status != record.status and record.status != JobStatus.CANCELLING:
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
        train, evaluation = latest_metrics(self.store.paths(record.name).metrics)
        progress = progress_from(train, evaluation, previous=record.progress)
        if progress is None or progress == record.progress:
            return False
        record.progress = progress
        record.updated_at = utcnow()
        return True

    def _finish(self, record: JobRecord, observation: Observation) -> Event:
        if record.cancel_requested_at is not None:
            return transition(record, JobStatus.CANCELLED, message="job cancelled")
        if observation.returncode == 0:
            return transition(record, JobStatus.SUCCEEDED, message="job succeeded")
        log = self.store.paths(record.name).log
        reason = classify_failure(log, observation.returncode)
        if observation.failure_reason and reason.startswith("unknown:"):
            # The trainer said nothing recognisable; the executor knows more (SkyPilot's view).
            reason = observation.failure_reason
        record.failure_reason = reason
        record.failure_log = failure_log(log)
        return transition(record, JobStatus.FAILED, message=record.failure_reason)

    def _grace_over(self, record: JobRecord) -> bool:
        requested = record.cancel_requested_at
        grace = self.settings.local_cancel_grace_seconds
        return requested is not None and (utcnow() - requested).total_seconds() >= grace

    def estimate_cost(self, request: JobCreate) -> CostEstimate:
        """What the job's resources would cost per hour; nothing is stored or launched."""
        spec = JobSpec.model_validate(
            {**request.model_dump(), "name": request.name or "estimate", "executor": "skypilot"}
        )
        return estimate_cost(spec)
