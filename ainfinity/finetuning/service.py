"""FineTuningService: OpenAI's fine-tuning jobs, each one a native job seen another way.

A create request becomes a `JobCreate` (files resolved to their paths, `"auto"` values
resolved, `hyperparameters.py`) and goes through the native service, so the job has the
same store, executor, events, dashboard and webhooks as any other. The native job is named
after its `ftjob-...` id; its record keeps what the OpenAI view needs (`FineTuningInfo`).
No HTTP in here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ainfinity.core.config import ApiKey
from ainfinity.exceptions import (
    InvalidDataset,
    InvalidModel,
    InvalidRequest,
    InvalidSpec,
    JobNotFound,
    ModelNotFound,
    ModelNotServable,
)
from ainfinity.files.file_store import FileRecord
from ainfinity.files.service import FileService
from ainfinity.finetuning.hyperparameters import KEPT_CHECKPOINTS, Resolved, resolve
from ainfinity.finetuning.view import checkpoint_views, event_views, job_view
from ainfinity.jobs.run_output import read_metrics
from ainfinity.jobs.service import SkyPilotService
from ainfinity.schema.activity import Metric
from ainfinity.schema.job import JobCreate, JobRecord
from ainfinity.schema.openai_fine_tuning import (
    FINE_TUNING_JOB_PREFIX,
    FineTuningInfo,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCreate,
    FineTuningJobEvent,
)
from ainfinity.schema.training_options import Hyperparameters
from ainfinity.store.job_index import encode_cursor
from ainfinity.train.checkpoints import list_checkpoints
from ainfinity.train.dataset import PREFERENCE_FORMAT

T = TypeVar("T", FineTuningJobEvent, FineTuningJobCheckpoint)
# Records read per step while looking for a page of OpenAI jobs among native ones.
_SCAN = 100


class FineTuningService:
    def __init__(self, *, jobs: SkyPilotService, files: FileService) -> None:
        self.jobs = jobs
        self.files = files

    # -- create ----------------------------------------------------------------------------

    def create(self, request: FineTuningJobCreate, *, caller: ApiKey) -> FineTuningJob:
        if request.integrations:
            kinds = sorted({str(i.get("type", "?")) for i in request.integrations})
            raise InvalidRequest(
                f"integrations are not available on this server ({', '.join(kinds)}): "
                "follow a job with its events, metrics stream or dashboard instead.",
                param="integrations",
            )
        method = request.method
        if method is not None:
            if method.type == "reinforcement":
                raise InvalidRequest(
                    "method.type 'reinforcement' is not available here; use 'supervised' or 'dpo'.",
                    param="method.type",
                )
            other = method.dpo if method.type == "supervised" else method.supervised
            if other is not None or method.reinforcement is not None:
                raise InvalidRequest(
                    f"method holds options for another method than {method.type!r}.",
                    param="method",
                )
        self._check_model(request.model, caller=caller)
        training = self.files.dataset(request.training_file, caller=caller, param="training_file")
        validation = (
            self.files.dataset(request.validation_file, caller=caller, param="validation_file")
            if request.validation_file is not None
            else None
        )
        resolved = resolve(request, rows=training.rows or 1)
        _check_format(training, resolved.method, param="training_file")
        if validation is not None:
            _check_format(validation, resolved.method, param="validation_file")
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        name = FINE_TUNING_JOB_PREFIX + secrets.token_hex(12)
        native = _native_request(
            request, name=name, training=training, validation=validation,
            resolved=resolved, seed=seed,
        )  # fmt: skip
        info = FineTuningInfo(
            model=request.model,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            method=resolved.method,
            n_epochs=resolved.n_epochs,
            batch_size=resolved.batch_size,
            learning_rate_multiplier=resolved.learning_rate_multiplier,
            beta=resolved.beta,
            seed=seed,
        )
        try:
            record = self.jobs.create_job(native, caller=caller, fine_tuning=info)
        except (InvalidDataset, InvalidModel, InvalidSpec) as exc:
            param = _PARAMS.get(exc.param or "", exc.param)
            raise InvalidRequest(exc.detail_msg, param=param) from None
        return job_view(record, metrics=None)

    def _check_model(self, model: str, *, caller: ApiKey) -> None:
        """A base model this server serves, or a fine-tuned model the caller may see; never
        a hub id or a path (nothing is downloaded for an OpenAI-shaped job)."""
        try:
            self.jobs.registry.get_model(model, caller=caller)
        except (ModelNotFound, ModelNotServable):
            raise InvalidRequest(
                f"Model {model!r} is not available for fine-tuning here: use one of "
                "GET /v1/models (a base model, or a fine-tuned model you own).",
                param="model",
            ) from None

    # -- read ------------------------------------------------------------------------------

    def get(self, job_id: str, *, caller: ApiKey) -> FineTuningJob:
        record = self._record(job_id, caller=caller)
        return job_view(record, metrics=self._metrics_if_ended(record))

    def list_jobs(
        self, *, caller: ApiKey, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> tuple[list[FineTuningJob], bool]:
        """Newest first, `limit` at a time after the job `after`; `metadata` filters on
        every pair given ({}: jobs without metadata)."""
        cursor = None
        if after is not None:
            try:
                cursor = encode_cursor(self._record(after, caller=caller))
            except JobNotFound:
                raise InvalidRequest(
                    f"after: no fine-tuning job {after!r}.", param="after"
                ) from None
        owner = None if caller.role == "admin" else caller.name
        found: list[JobRecord] = []
        while len(found) <= limit:
            page = self.jobs.store.list_jobs(limit=_SCAN, cursor=cursor, owner=owner)
            found += [r for r in page.jobs if _listed(r, metadata)]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        views = [job_view(r, metrics=self._metrics_if_ended(r)) for r in found[:limit]]
        return views, len(found) > limit

    def events(
        self, job_id: str, *, caller: ApiKey, after: str | None, limit: int
    ) -> tuple[list[FineTuningJobEvent], bool]:
        record = self._record(job_id, caller=caller)
        views = event_views(
            record,
            self.jobs.store.read_events(record.name),
            self.jobs.list_metrics(record.name, caller=caller),
        )
        return _page(views, after=after, limit=limit)

    def checkpoints(
        self, job_id: str, *, caller: ApiKey, after: str | None, limit: int
    ) -> tuple[list[FineTuningJobCheckpoint], bool]:
        record = self._record(job_id, caller=caller)
        views = checkpoint_views(record, list_checkpoints(Path(record.output_dir)))
        return _page(views, after=after, limit=limit)

    # -- actions ---------------------------------------------------------------------------

    def cancel(self, job_id: str, *, caller: ApiKey) -> FineTuningJob:
        return self._act(job_id, caller, self.jobs.cancel_job)

    def pause(self, job_id: str, *, caller: ApiKey) -> FineTuningJob:
        return self._act(job_id, caller, self.jobs.pause_job)

    def resume(self, job_id: str, *, caller: ApiKey) -> FineTuningJob:
        return self._act(job_id, caller, self.jobs.resume_job)

    def _act(self, job_id: str, caller: ApiKey, action: Callable[..., JobRecord]) -> FineTuningJob:
        self._record(job_id, caller=caller)
        record = action(job_id, caller=caller)
        return job_view(record, metrics=self._metrics_if_ended(record))

    # -- helpers ---------------------------------------------------------------------------

    def _record(self, job_id: str, *, caller: ApiKey) -> JobRecord:
        """The caller's OpenAI job (404 for anything else, native jobs included)."""
        if not job_id.startswith(FINE_TUNING_JOB_PREFIX):
            raise JobNotFound(f"No fine-tuning job {job_id!r}.", param="fine_tuning_job_id")
        try:
            record = self.jobs.get_job(job_id, caller=caller)
        except JobNotFound:
            raise JobNotFound(
                f"No fine-tuning job {job_id!r}.", param="fine_tuning_job_id"
            ) from None
        if record.fine_tuning is None:
            raise JobNotFound(f"No fine-tuning job {job_id!r}.", param="fine_tuning_job_id")
        return record

    def _metrics_if_ended(self, record: JobRecord) -> list[Metric] | None:
        """The run's records for `trained_tokens`, which OpenAI leaves null until the end."""
        if not record.status.is_terminal:
            return None
        return read_metrics(self.jobs.store.paths(record.name).metrics)


# The native request's field names, as OpenAI's request calls them.
_PARAMS = {"dataset": "training_file", "validation_dataset": "validation_file"}


def _check_format(file: FileRecord, method: str, *, param: str) -> None:
    preference = file.format == PREFERENCE_FORMAT
    if method == "dpo" and not preference:
        raise InvalidRequest(
            f"{param}: {file.id} holds {file.format!r} rows; method 'dpo' trains on preference "
            "rows ({'input', 'preferred_output', 'non_preferred_output'}).",
            param=param,
        )
    if method == "supervised" and preference:
        raise InvalidRequest(
            f"{param}: {file.id} holds preference rows; train them with method 'dpo'.",
            param=param,
        )


def _native_request(
    request: FineTuningJobCreate,
    *,
    name: str,
    training: FileRecord,
    validation: FileRecord | None,
    resolved: Resolved,
    seed: int,
) -> JobCreate:
    per_epoch = resolved.steps_per_epoch(training.rows or 1)
    try:
        return JobCreate(
            name=name,
            model=request.model,
            dataset=training.path,
            validation_dataset=validation.path if validation else None,
            method="dpo" if resolved.method == "dpo" else "full",
            dpo={"beta": resolved.beta} if resolved.method == "dpo" else None,
            hyperparameters=Hyperparameters(
                epochs=resolved.n_epochs,
                batch_size=resolved.batch_size,
                learning_rate=resolved.learning_rate,
                seed=seed,
                save_steps=per_epoch,
                save_total_limit=KEPT_CHECKPOINTS,
            ),
            metadata=request.metadata or {},
            suffix=request.suffix,
        )
    except ValueError as exc:  # pydantic's: a value the native job refuses
        raise InvalidRequest(f"The job cannot be built: {exc}") from None


def _listed(record: JobRecord, metadata: dict[str, str] | None) -> bool:
    if record.fine_tuning is None:
        return False
    if metadata is None:
        return True
    if not metadata:
        return not record.spec.metadata
    return all(record.spec.metadata.get(k) == v for k, v in metadata.items())


def _page(views: Sequence[T], *, after: str | None, limit: int) -> tuple[list[T], bool]:
    start = 0
    if after is not None:
        ids = [v.id for v in views]
        if after not in ids:
            raise InvalidRequest(f"after: {after!r} is not in this list.", param="after")
        start = ids.index(after) + 1
    rest = list(views[start:])
    return rest[:limit], len(rest) > limit
