"""SkyPilotService: turns job requests into rendered SkyPilot tasks and drives them to the end.

It knows nothing of HTTP. Requests (create, cancel, delete) are decided here under the
job's lock; the reconciler - run on a timer and after every request - launches queued
jobs and moves running ones along with what their executor observes
(`ainfinity.jobs.reconciler`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import (
    InvalidCursor,
    InvalidSpec,
    JobActive,
    JobExists,
    JobNotFound,
    NotImplementedYet,
)
from ainfinity.executors.protocol import Executor
from ainfinity.executors.sky_catalog import estimate_cost, validate_task
from ainfinity.executors.sky_wheel import ServerWheelUnavailable, server_wheel
from ainfinity.jobs import controls
from ainfinity.jobs.dataset_stats import initial_stats
from ainfinity.jobs.event_feed import EventFeed, FeedMessage
from ainfinity.jobs.inputs import check_method_fits, lora_target_modules, resolve_datasets
from ainfinity.jobs.logs import follow_file, read_chunks, tail_offset
from ainfinity.jobs.reconciler import Reconciler
from ainfinity.jobs.run_output import read_metrics
from ainfinity.jobs.task_render import dump_job_config, dump_task, render_job
from ainfinity.jobs.transitions import utcnow
from ainfinity.jobs.webhook_targets import check_webhook_url
from ainfinity.jobs.webhooks import WebhookDispatcher
from ainfinity.schema.activity import Event, EventType, Metric
from ainfinity.schema.estimate import CostEstimate
from ainfinity.schema.job import Checkpoint, Job, JobCreate, JobRecord, JobSpec, JobStatus
from ainfinity.schema.openai_fine_tuning import FineTuningInfo
from ainfinity.serving.registry import ModelRegistry
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
        registry: ModelRegistry,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.executors = executors
        self.template = template
        # Set by the app to wake its reconciler loop early (after a create or cancel).
        self.on_change: Callable[[], None] = lambda: None
        # Set by the app: a job was created whose token lengths are to be measured; a job
        # was deleted (its model, if any, goes with it).
        self.on_created: Callable[[str], None] = lambda name: None
        self.on_deleted: Callable[[JobRecord], None] = lambda record: None
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

    def create_job(
        self, request: JobCreate, *, caller: ApiKey, fine_tuning: FineTuningInfo | None = None
    ) -> JobRecord:
        """Validate, render and store a job (PENDING); `fine_tuning` is set by the OpenAI view."""
        actor = caller.name
        executor_name = request.executor or self.settings.executor
        if executor_name not in self.executors:
            raise NotImplementedYet(f"The {executor_name} executor is not available yet.")
        if executor_name == "local" and request.resources.num_nodes != 1:
            raise InvalidSpec("The local executor runs one node; num_nodes must be 1.")
        if executor_name == "local" and request.output_uri is not None:
            raise InvalidSpec("output_uri needs the skypilot executor; local jobs write locally.")
        if request.webhook_url is not None:
            check_webhook_url(request.webhook_url, self.settings.webhook_hosts)
        name = request.name or generate_name()
        # Early answer for a taken name, before the dataset is read row by row; the store's
        # create() is what guarantees uniqueness against concurrent creators.
        if self.store.exists(name):
            raise JobExists(f"A job named {name!r} already exists.")
        trained_from = self.registry.resolve_job_model(request.model, caller=caller)
        dataset, validation = resolve_datasets(
            request.dataset,
            request.validation_dataset,
            executor=executor_name,
            allowed_dirs=self.settings.data_dirs,
        )
        check_method_fits(request.method, dataset)
        spec = JobSpec.model_validate(
            {
                **request.model_dump(),
                "name": name,
                "executor": executor_name,
                # A fine-tuned id stays as given; a directory is shown resolved.
                "model": request.model if request.model.startswith("ft:") else trained_from.load,
                "dataset": dataset.location,
                "validation_dataset": validation.location if validation else None,
            }
        )
        hyperparameters = spec.hyperparameters
        # Preference rows are measured by the trainer (TRL tokenizes them its own way).
        measure_tokens = self.settings.token_stats and request.method != "dpo"
        paths = self.store.paths(name)
        rendered = render_job(
            self.template,
            spec,
            paths,
            trained_from,
            pip_spec=self.settings.skypilot_pip_spec,
            wheel=self._node_wheel() if executor_name == "skypilot" else None,
        )
        lora_targets = lora_target_modules(spec, trained_from)
        if lora_targets is not None and trained_from.adapter is None:
            # The trainer adapts exactly what the job shows.
            rendered.job_config["lora"]["target_modules"] = lora_targets
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
            dataset_stats=initial_stats(
                dataset, hyperparameters=hyperparameters, measure_tokens=measure_tokens
            ),
            validation_dataset_stats=(
                initial_stats(
                    validation, hyperparameters=hyperparameters, measure_tokens=measure_tokens
                )
                if validation is not None
                else None
            ),
            training_model=trained_from,
            lora_target_modules=lora_targets,
            dataset_sha256=dataset.sha256,
            validation_dataset_sha256=validation.sha256 if validation else None,
            fine_tuning=fine_tuning,
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
        if measure_tokens:
            self.on_created(name)
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
            return self.create_job(request, caller=caller).public()
        answer = self.idempotency.run(
            caller=caller.name,
            key=idempotency_key,
            operation="create",
            body_fingerprint=fingerprint(request.model_dump(mode="json")),
            act=lambda: self.create_job(request, caller=caller).public().model_dump(mode="json"),
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
            executor, paths = self.executors[record.executor], self.store.paths(name)
            return controls.cancel(record, actor=actor, executor=executor, paths=paths)

        record = self.store.update(name, change)
        logger.info("job cancel requested", extra={"job": name, "actor": actor})
        self.on_change()
        return record

    def pause_job(self, name: str, *, caller: ApiKey) -> JobRecord:
        """Ask a running job to save a complete checkpoint at its next step's end and stop
        (PAUSING, then PAUSED); `resume_job` relaunches it from there."""
        actor = caller.name

        def change(record: JobRecord) -> list[Event] | None:
            _check_visible(caller, record)
            executor, paths = self.executors[record.executor], self.store.paths(name)
            return controls.pause(record, actor=actor, executor=executor, paths=paths)

        record = self.store.update(name, change)
        logger.info("job pause requested", extra={"job": name, "actor": actor})
        self.on_change()
        return record

    def resume_job(self, name: str, *, caller: ApiKey) -> JobRecord:
        """Queue a paused job again; it relaunches from its newest complete checkpoint."""
        actor = caller.name

        def change(record: JobRecord) -> list[Event] | None:
            _check_visible(caller, record)
            return controls.resume(record, actor=actor)

        record = self.store.update(name, change)
        logger.info("job resumed", extra={"job": name, "actor": actor})
        self.on_change()
        return record

    def delete_job(self, name: str, *, caller: ApiKey) -> None:
        actor = caller.name

        deleted: list[JobRecord] = []

        def allowed(record: JobRecord) -> None:
            _check_visible(caller, record)
            if not record.status.is_terminal:
                raise JobActive(f"Job {name!r} is {record.status.value}; cancel it first.")
            deleted.append(record)

        self.store.delete(name, allowed=allowed)
        logger.info("job deleted", extra={"job": name, "actor": actor})
        self.on_deleted(deleted[0])

    def read_logs(
        self, name: str, *, tail: int | None, raw: bool, caller: ApiKey
    ) -> Iterator[bytes]:
        """The log (or its last `tail` lines) as it is now, a block at a time; without `raw`,
        the trainer's protocol lines are left out. Visibility is checked here, at once."""
        path = self._visible(name, caller).log
        start = tail_offset(path, tail, raw=raw) if tail is not None else 0
        return read_chunks(path, start=start, raw=raw)

    def follow_logs(
        self,
        name: str,
        *,
        tail: int | None,
        raw: bool,
        caller: ApiKey,
        stopping: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """The log from its start (or its last `tail` lines), then as it is written, until
        the job ends. Visibility is checked here, before anything is streamed."""
        record = self.get_job(name, caller=caller)
        path = self.store.paths(name).log
        return follow_file(
            path,
            start=tail_offset(path, tail, raw=raw) if tail is not None else 0,
            finished=lambda: self._ended(record),
            poll_seconds=self.settings.stream_poll_seconds,
            stopping=stopping,
            raw=raw,
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
        return current.created_at != watched.created_at or not current.status.is_active

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
        return estimate_cost(spec.resources)
