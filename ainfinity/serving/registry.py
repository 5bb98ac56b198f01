"""The model registry: which models exist, who may use them, and where their files are.

A fine-tuned model is a view of the job that produced it: a job that ends SUCCEEDED gets
`fine_tuned_model` (its id) and `registered_model` (facts taken then) on its record, in the
same write as its status. The list index keeps one row per job with its model id, so a page
of models reads only its own records. Unregistering a model clears `fine_tuned_model` on the
job record (the job and its files stay). Base models are the built-ins and the model
directories in `AINFINITY_MODEL_DIRS`, found on each request (there are few).
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from ainfinity.core.config import ApiKey, Settings
from ainfinity.exceptions import (
    InvalidCursor,
    InvalidModel,
    JobNotFound,
    ModelNotDeletable,
    ModelNotFound,
    ModelNotServable,
    PathNotAllowed,
)
from ainfinity.jobs.transitions import utcnow
from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, TrainingModel
from ainfinity.schema.model import Model
from ainfinity.serving.base_models import (
    BUILTIN_MODELS,
    TINY_MODEL,
    TINY_MODEL_SERVED_SEED,
    base_models,
    find_base_model,
    inside,
)
from ainfinity.serving.model_ids import (
    FT_PREFIX,
    FineTunedId,
    parse_fine_tuned,
)
from ainfinity.serving.model_records import files_size, legacy_training_model, model_of, public_base
from ainfinity.serving.model_source import ModelSource
from ainfinity.store.job_index import time_key
from ainfinity.store.job_store import JobStore
from ainfinity.train.checkpoints import list_checkpoints

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class ModelPage:
    models: list[Model]
    next_cursor: str | None


def can_see(caller: ApiKey, record: JobRecord) -> bool:
    return caller.role == "admin" or record.owner == caller.name


class ModelRegistry:
    """Models for the routes and the gateway; jobs' models for the job service."""

    def __init__(self, *, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    # -- what a job trains from -------------------------------------------------------------

    def resolve_job_model(self, model: str, *, caller: ApiKey) -> TrainingModel:
        """A job's `model`: a built-in, a fine-tuned model the caller may see, a directory
        inside AINFINITY_MODEL_DIRS (by name or path), or a hub id.

        A path is checked against the model dirs before anything looks at it, so the answer
        says nothing about files elsewhere (403 `path_not_allowed` for `/etc` as for a path
        that does not exist)."""
        if model in BUILTIN_MODELS:
            return TrainingModel(load=model, tokenizer=model, base_model=model)
        if model.startswith(FT_PREFIX):
            return self._continue_from(model, caller=caller)
        base = find_base_model(model, self.settings.model_dirs)
        if base is not None and base.path is not None:
            return _from_directory(base.path)
        path_like = model.startswith(("/", "./", "../", "~")) or model in (".", "..")
        resolved = _resolve_path(model)
        if resolved is not None and inside(resolved, self.settings.model_dirs):
            if resolved.is_dir():
                if not (resolved / "config.json").is_file():
                    raise InvalidModel(f"Model directory {model!r} has no config.json.")
                return _from_directory(resolved)
            if path_like:
                raise InvalidModel(f"Model directory {model!r} does not exist on the server.")
        if path_like:
            raise PathNotAllowed(
                f"Model path {model!r} is outside the directories this server reads models "
                "from (AINFINITY_MODEL_DIRS)."
            )
        if HUB_ID.match(model) and ".." not in model:
            return TrainingModel(load=model, tokenizer=model, base_model=model)
        raise InvalidModel(
            f"Model {model!r} is not a built-in ({', '.join(sorted(BUILTIN_MODELS))}), a "
            "fine-tuned model (ft:...), a model in AINFINITY_MODEL_DIRS, or a hub id like "
            "'org/name'."
        )

    def _continue_from(self, model: str, *, caller: ApiKey) -> TrainingModel:
        try:
            record = self._owner_record(model, caller=caller)
            source = self._fine_tuned_source(record, model)
        except ModelNotFound:
            raise InvalidModel(f"Model {model!r} is not a model you can train from.") from None
        except ModelNotServable as exc:
            raise InvalidModel(f"Model {model!r} cannot be trained from here: {exc}") from None
        parent = record.training_model or legacy_training_model(record)
        return TrainingModel(
            load=source.load,
            adapter=source.adapter,
            model_seed=source.seed,
            tokenizer=source.tokenizer or source.load,
            base_model=parent.base_model,
        )

    # -- listing and lookup -------------------------------------------------------------------

    def list_models(self, *, caller: ApiKey, limit: int, cursor: str | None) -> ModelPage:
        """Base and fine-tuned models newest first, `limit` at a time after `cursor`."""
        after = _decode_cursor(cursor) if cursor is not None else None
        if cursor is not None and after is None:
            raise InvalidCursor()
        owner = None if caller.role == "admin" else caller.name
        bases = [(_sort_key(m), m) for m in map(public_base, base_models(self.settings.model_dirs))]
        found = [item for item in bases if after is None or item[0] < after]
        found.extend(self._fine_tuned_page(limit=limit + 1, after=after, owner=owner))
        found.sort(key=lambda item: item[0], reverse=True)
        page = [model for _, model in found[: limit + 1]]
        more = len(page) > limit
        page = page[:limit]
        return ModelPage(page, _encode_cursor(page[-1]) if more and page else None)

    def _fine_tuned_page(
        self, *, limit: int, after: tuple[int, str] | None, owner: str | None
    ) -> list[tuple[tuple[int, str], Model]]:
        found: list[tuple[tuple[int, str], Model]] = []
        while len(found) < limit:
            want = limit - len(found)
            rows = self.store.index.model_page(limit=want, after=after, owner=owner)
            for row in rows:
                with contextlib.suppress(JobNotFound, ValidationError):
                    record = self.store.get(row.name)
                    # The record decides: a row may be a moment behind it.
                    if record.fine_tuned_model == row.model and (
                        owner is None or record.owner == owner
                    ):
                        model = model_of(record)
                        found.append((_sort_key(model), model))
            if len(rows) < want:
                break
            after = (rows[-1].model_us, rows[-1].model)
        return found

    def get_model(self, model_id: str, *, caller: ApiKey) -> Model:
        base = find_base_model(model_id, self.settings.model_dirs)
        if base is not None:
            return public_base(base)
        record = self._owner_record(model_id, caller=caller)
        parsed = parse_fine_tuned(model_id)
        assert parsed is not None
        model = model_of(record)
        if parsed.step is None:
            return model
        checkpoint = self._checkpoint_dir(record, parsed)
        return model.model_copy(
            update={
                "id": model_id,
                "path": str(checkpoint),
                "size_bytes": files_size(checkpoint),
                "checkpoints": [],
            }
        )

    def visible_ids(self, *, caller: ApiKey) -> list[Model]:
        """Every model the caller may use, newest first (`GET /v1/models`)."""
        models: list[Model] = []
        cursor = None
        while True:
            page = self.list_models(caller=caller, limit=100, cursor=cursor)
            models.extend(page.models)
            if page.next_cursor is None:
                return models
            cursor = page.next_cursor

    def serving_source(self, model_id: str, *, caller: ApiKey) -> ModelSource:
        """How the worker loads `model_id`; 404 `model_not_found` for what the caller may
        not see, 422 `model_not_servable` when its files are not on this server."""
        base = find_base_model(model_id, self.settings.model_dirs)
        if base is not None:
            if base.path is None:
                seed = TINY_MODEL_SERVED_SEED if base.id == TINY_MODEL else None
                return ModelSource(id=model_id, load=base.id, seed=seed)
            return ModelSource(id=model_id, load=str(base.path))
        return self._fine_tuned_source(self._owner_record(model_id, caller=caller), model_id)

    def _fine_tuned_source(self, record: JobRecord, model_id: str) -> ModelSource:
        parsed = parse_fine_tuned(model_id)
        assert parsed is not None
        output = Path(record.output_dir)
        if record.executor != "local" or not output.is_dir():
            raise ModelNotServable(
                f"Model {model_id!r} was trained by the {record.executor} executor; its files "
                f"are at {record.output_dir}, not on this server."
            )
        files = self._checkpoint_dir(record, parsed) if parsed.step is not None else output
        # A checkpoint may lack the tokenizer; the final one is the same.
        tokenizer = files if (files / "tokenizer_config.json").is_file() else output
        if not record.spec.adapts:
            return ModelSource(id=model_id, load=str(files), tokenizer=str(tokenizer))
        trained_from = record.training_model or legacy_training_model(record)
        seed = trained_from.model_seed
        if seed is None and trained_from.load in BUILTIN_MODELS:
            seed = record.spec.hyperparameters.seed
        return ModelSource(
            id=model_id,
            load=trained_from.load,
            seed=seed,
            adapter=str(files),
            tokenizer=str(tokenizer),
        )

    def fine_tuned_record(self, model_id: str, *, caller: ApiKey) -> JobRecord:
        """The record of the job whose model (or checkpoint) `model_id` is; 404
        `model_not_found` when there is none the caller may see."""
        return self._owner_record(model_id, caller=caller)

    def checkpoint_dir(self, record: JobRecord, model_id: str) -> Path:
        """The directory of the complete checkpoint a `...:ckpt-N` id names (404 otherwise)."""
        parsed = parse_fine_tuned(model_id)
        if parsed is None or parsed.step is None:
            raise ModelNotFound(f"The model {model_id!r} names no checkpoint.")
        return self._checkpoint_dir(record, parsed)

    def _owner_record(self, model_id: str, *, caller: ApiKey) -> JobRecord:
        """The record of the job whose model `model_id` is, if the caller may see it."""
        parsed = parse_fine_tuned(model_id)
        if parsed is None:
            raise ModelNotFound(f"The model {model_id!r} does not exist.")
        try:
            record = self.store.get(parsed.job)
        except (JobNotFound, ValidationError):
            raise ModelNotFound(f"The model {model_id!r} does not exist.") from None
        if record.fine_tuned_model != parsed.model_id or not can_see(caller, record):
            raise ModelNotFound(f"The model {model_id!r} does not exist.")
        return record

    def _checkpoint_dir(self, record: JobRecord, parsed: FineTunedId) -> Path:
        for found in list_checkpoints(Path(record.output_dir)):
            if found.step == parsed.step and found.complete:
                return found.path
        raise ModelNotFound(f"The model {parsed.model_id!r} has no complete checkpoint at step "
                            f"{parsed.step}.")  # fmt: skip

    # -- unregistering -------------------------------------------------------------------------

    def unregister(self, model_id: str, *, caller: ApiKey) -> str:
        """Forget a fine-tuned model; its job and files stay. Returns the job's name."""
        if find_base_model(model_id, self.settings.model_dirs) is not None:
            raise ModelNotDeletable(
                f"{model_id!r} is a base model; remove its directory from "
                "AINFINITY_MODEL_DIRS instead."
            )
        parsed = parse_fine_tuned(model_id)
        if parsed is not None and parsed.step is not None:
            self._owner_record(parsed.model_id, caller=caller)
            raise ModelNotDeletable(
                "A checkpoint goes with its model; delete the model, or the job."
            )
        record = self._owner_record(model_id, caller=caller)

        def change(current: JobRecord) -> list[Event] | None:
            if current.fine_tuned_model != model_id or not can_see(caller, current):
                raise ModelNotFound(f"The model {model_id!r} does not exist.")
            current.fine_tuned_model = None
            return [
                Event(
                    time=utcnow(),
                    type=EventType.MODEL_DELETED,
                    status=current.status,
                    message=f"model {model_id} deleted",
                    actor=caller.name,
                )
            ]

        try:
            self.store.update(record.name, change)
        except JobNotFound:
            raise ModelNotFound(f"The model {model_id!r} does not exist.") from None
        return record.name


def _from_directory(path: Path) -> TrainingModel:
    return TrainingModel(load=str(path), tokenizer=str(path), base_model=str(path))


def _resolve_path(model: str) -> Path | None:
    try:
        return Path(model).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        return None


def _sort_key(model: Model) -> tuple[int, str]:
    return (time_key(model.created_at), model.id)


def _encode_cursor(model: Model) -> str:
    raw = f"{model.created_at.isoformat()}|{model.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, sep, model_id = raw.partition("|")
        moment = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError):
        return None
    return (time_key(moment), model_id) if sep and model_id else None
