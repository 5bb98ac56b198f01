"""SkyPilotService: turns job requests into rendered SkyPilot tasks and drives them to the end.

It knows nothing of HTTP. Requests (create, cancel, delete) are decided here under the
job's lock; the reconciler - run on a timer and after every request - launches queued
jobs and moves running ones along with what their executor observes
(`ainfinity.jobs.reconciler`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

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
from ainfinity.executors.protocol import Executor
from ainfinity.executors.sky_catalog import estimate_cost, validate_task
from ainfinity.executors.sky_wheel import ServerWheelUnavailable, server_wheel
from ainfinity.jobs.dataset_stats import describe_dataset
from ainfinity.jobs.event_feed import EventFeed, FeedMessage
from ainfinity.jobs.inputs import resolve_dataset, resolve_model
from ainfinity.jobs.log_follow import follow_file, tail_offset
from ainfinity.jobs.reconciler import Reconciler
from ainfinity.jobs.run_output import read_log, read_metrics
from ainfinity.jobs.task_render import dump_job_config, dump_task, render_job
from ainfinity.jobs.transitions import transition, utcnow
from ainfinity.jobs.webhooks import WebhookDispatcher, check_webhook_host
from ainfinity.schema.activity import Event, EventType, Metric
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import Checkpoint, Job, JobCreate, JobRecord, JobSpec, JobStatus
from ainfinity.store.idempotency import IdempotencyKeys, fingerprint
from ainfinity.store.job_files import JobPaths
from ainfinity.store.job_index import JobPage, decode_cursor
from ainfinity.store.job_store import JobStore
from ainfinity.train.checkpoints import list_checkpoints

logger = logging.getLogger("ainfinity.service")


def _check_visible(caller: ApiKey, record: JobRecord) -> None:
    """Admins see every job; a user sees only the jobs created with its own key.

    Another user's job does not exist for this caller: 404, never 403.
    """
    if caller.role != "admin" and record.owner != caller.name:
        raise JobNotFound(f"No job named {record.name!r}.")


def generate_name() -> str:
    return f"job-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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
        self.feed = EventFeed(settings, store)
        self.webhooks = WebhookDispatcher(settings, store)
        store.write_hooks.extend([self.feed.on_write, self.webhooks.on_write])
        self.reconciler = Reconciler(
            settings=settings, store=store, executors=executors, wake=self._notify, feed=self.feed
        )
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
        if request.webhook_url is not None:
            check_webhook_host(request.webhook_url, self.settings.webhook_hosts)
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
        rendered = render_job(
            self.template,
            spec,
            paths,
            pip_spec=self.settings.skypilot_pip_spec,
            wheel=self._node_wheel() if executor_name == "skypilot" else None,
        )
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

    def _node_wheel(self) -> Path | None:
        """This server's ainfinity as a wheel for SkyPilot nodes, unless a pip spec is set."""
        if self.settings.skypilot_pip_spec is not None:
            return None
        try:
            return server_wheel(self.settings.home)
        except ServerWheelUnavailable as exc:
            raise InvalidSpec(str(exc)) from None

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
        _check_visible(caller, record)
        return record

    def list_jobs(
        self, *, limit: int, cursor: str | None, status: JobStatus | None, caller: ApiKey
    ) -> JobPage:
        if cursor is not None and decode_cursor(cursor) is None:
            raise InvalidCursor()
        owner = None if caller.role == "admin" else caller.name
        return self.store.list_jobs(limit=limit, cursor=cursor, status=status, owner=owner)

    def cancel_job(self, name: str, *, caller: ApiKey) -> JobRecord:
        actor = caller.name

        def change(record: JobRecord) -> list[Event] | None:
            _check_visible(caller, record)
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
            _check_visible(caller, record)
            if not record.status.is_terminal:
                raise JobActive(f"Job {name!r} is {record.status.value}; cancel it first.")

        self.store.delete(name, allowed=allowed)
        logger.info("job deleted", extra={"job": name, "actor": actor})

    def read_logs(self, name: str, *, tail: int | None, caller: ApiKey) -> str:
        return read_log(self._visible(name, caller).log, tail)

    def follow_logs(
        self, name: str, *, tail: int | None, caller: ApiKey, stopping: Callable[[], bool]
    ) -> AsyncIterator[bytes]:
        """The log from its start (or its last `tail` lines), then as it is written, until
        the job ends. Visibility is checked here, before anything is streamed."""
        record = self.get_job(name, caller=caller)
        path = self.store.paths(name).log
        return follow_file(
            path,
            start=tail_offset(path, tail) if tail is not None else 0,
            finished=lambda: self._ended(record),
            poll_seconds=self.settings.stream_poll_seconds,
            stopping=stopping,
        )

    def job_event_stream(
        self,
        name: str,
        *,
        caller: ApiKey,
        last_event_id: int | None,
        stopping: Callable[[], bool],
    ) -> AsyncIterator[FeedMessage]:
        """The job's feed from its creation, or after `last_event_id`; ends with the job."""
        record = self.get_job(name, caller=caller)
        first = self.feed.job_start(name)
        start = max(first, self.feed.resume_point(last_event_id, default=first))
        return self.feed.job_stream(record, start=start, stopping=stopping)

    def event_stream(
        self, *, caller: ApiKey, last_event_id: int | None, stopping: Callable[[], bool]
    ) -> AsyncIterator[FeedMessage]:
        """Every visible job's feed from now, or after `last_event_id`, until the client leaves."""
        now = self.feed.journal.size()
        start = self.feed.resume_point(last_event_id, default=-1)
        announce = start < 0
        return self.feed.global_stream(
            caller, start=now if announce else start, announce=announce, stopping=stopping
        )

    def _ended(self, watched: JobRecord) -> bool:
        try:
            current = self.store.get(watched.name)
        except JobNotFound:
            return True
        return current.created_at != watched.created_at or current.status.is_terminal

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

    # -- reconciliation (ainfinity.jobs.reconciler) ---------------------------------------

    def startup(self) -> None:
        """Re-derive what is active from the records, then check each job against reality."""
        self.idempotency.sweep()
        self.reconciler.startup()

    def reconcile(self) -> None:
        """One pass over the active jobs; safe to call from several threads and workers."""
        self.reconciler.reconcile()

    def estimate_cost(self, request: JobCreate) -> CostEstimate:
        """What the job's resources would cost per hour; nothing is stored or launched."""
        spec = JobSpec.model_validate(
            {**request.model_dump(), "name": request.name or "estimate", "executor": "skypilot"}
        )
        return estimate_cost(spec)
