"""Check and resolve a job's datasets before anything is written or launched (its model is
resolved by the model registry, `ainfinity.serving.registry`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ainfinity.exceptions import InvalidDataset, PathNotAllowed
from ainfinity.schema.job import BUCKET_URI_PATTERN, JobSpec, TrainingModel
from ainfinity.serving.base_models import BUILTIN_MODEL_TYPES
from ainfinity.train.dataset import DatasetReport, validate_dataset
from ainfinity.train.lora_targets import AUTO, model_type_of, targets_for
from ainfinity.train.preference import PREFERENCE_FORMAT

BUCKET_URI = re.compile(BUCKET_URI_PATTERN)
DATASET_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset as the job will read it; `report` and `sha256` are None for a bucket URI
    (read on the node)."""

    location: str
    report: DatasetReport | None
    sha256: str | None = None


def resolve_dataset(
    dataset: str,
    *,
    executor: str,
    allowed_dirs: Sequence[Path],
    field: str = "dataset",
) -> ResolvedDataset:
    """A bucket URI (SkyPilot only) or a readable, valid JSONL file, as an absolute path.

    A path must lie inside one of `allowed_dirs` once resolved (links followed); that is
    checked before anything else, so the answer says nothing about files elsewhere.
    """
    what = "Dataset" if field == "dataset" else "Validation dataset"
    if "://" in dataset:
        if not BUCKET_URI.match(dataset):
            raise InvalidDataset(
                f"{what} URI {dataset!r} is not a supported bucket URI (s3, gs, r2, cos, oci; "
                "the path may hold letters, digits and ._/=+,@:%- only)."
            )
        if executor == "local":
            raise InvalidDataset("Bucket URIs need the skypilot executor; give a local path.")
        return ResolvedDataset(dataset, None)
    path = Path(dataset).expanduser()
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a link loop
        raise PathNotAllowed(f"{what} {dataset!r} cannot be resolved.") from None
    if not any(resolved.is_relative_to(allowed) for allowed in allowed_dirs):
        raise PathNotAllowed(
            f"{what} {dataset!r} is outside the directories this server reads data from "
            "(AINFINITY_DATA_DIRS)."
        )
    if not path.is_file():
        raise InvalidDataset(f"{what} {dataset!r} does not exist on the server or is not a file.")
    if path.suffix.lower() not in DATASET_SUFFIXES:
        raise InvalidDataset(f"{what} {dataset!r} must be a JSONL file (.jsonl).")
    try:
        report = validate_dataset(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDataset(f"{what} {dataset!r} cannot be read: {exc}") from None
    if report.errors:
        problems = "; ".join(
            f"line {e.line}: {e.reason}" if e.line else e.reason for e in report.errors
        )
        raise InvalidDataset(f"{what} {dataset!r} is not valid training data: {problems}")
    return ResolvedDataset(str(path.resolve()), report, _sha256(path))


def resolve_datasets(
    dataset: str,
    validation_dataset: str | None,
    *,
    executor: str,
    allowed_dirs: Sequence[Path],
) -> tuple[ResolvedDataset, ResolvedDataset | None]:
    """A job's dataset and validation dataset, which must be of one format."""
    train = resolve_dataset(dataset, executor=executor, allowed_dirs=allowed_dirs)
    if validation_dataset is None:
        return train, None
    validation = resolve_dataset(
        validation_dataset, executor=executor, allowed_dirs=allowed_dirs, field="validation_dataset"
    )
    if train.report and validation.report and validation.report.format != train.report.format:
        raise InvalidDataset(
            f"The validation dataset is {validation.report.format!r} data but the "
            f"dataset is {train.report.format!r}; use one format for both."
        )
    return train, validation


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def lora_target_modules(spec: JobSpec, trained_from: TrainingModel) -> list[str] | None:
    """The layers a LoRA job will adapt, when they can be known before it runs: the list asked
    for; for `auto` (or `all-linear`), the projections of the model's family, from its
    config.json (a built-in, a directory, a cached hub model); a continued LoRA model keeps
    its adapter's. None: decided where the job loads its model."""
    if not spec.adapts:
        return None
    if trained_from.adapter is not None:
        targets = _adapter_targets(Path(trained_from.adapter))
        return targets
    requested = spec.lora.target_modules if spec.lora else AUTO
    if isinstance(requested, list):
        return list(requested)
    model_type = _model_type(trained_from.load)
    # For these families every linear layer but the head is one of the projections.
    return targets_for(model_type)


def _model_type(load: str) -> str | None:
    if load in BUILTIN_MODEL_TYPES:
        return BUILTIN_MODEL_TYPES[load]
    if load.startswith("/"):
        return model_type_of(load)
    try:  # a hub id: only what is already in this server's cache
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(load, "config.json")
    except (ImportError, ValueError):
        return None
    return model_type_of(Path(cached).parent) if isinstance(cached, str) else None


def _adapter_targets(adapter: Path) -> list[str] | None:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    targets = config.get("target_modules") if isinstance(config, dict) else None
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        return sorted(targets)
    return None


def check_method_fits(method: str, dataset: ResolvedDataset) -> None:
    """DPO trains on preference rows, the other methods on anything else (422 otherwise)."""
    found = dataset.report.format if dataset.report else None
    if found is None:
        return  # a bucket: checked where the job runs
    if method == "dpo" and found != PREFERENCE_FORMAT:
        raise InvalidDataset(
            f"Method 'dpo' trains on preference rows ({{'input', 'preferred_output', "
            f"'non_preferred_output'}}); this dataset is {found!r} data.",
            param="dataset",
        )
    if method != "dpo" and found == PREFERENCE_FORMAT:
        raise InvalidDataset(
            f"Preference rows are trained with method 'dpo', not {method!r}.", param="dataset"
        )
