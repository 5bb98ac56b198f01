"""Check and resolve a job's model and dataset before anything is written or launched."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ainfinity.exceptions import InvalidDataset, InvalidModel, PathNotAllowed
from ainfinity.schema.job import BUCKET_URI_PATTERN
from ainfinity.train.dataset import DatasetReport, validate_dataset

# Built by `ainfinity.train.tiny_model` on the node; named here so the API needs no torch.
BUILTIN_MODELS = frozenset({"tiny-random-llama"})
BUCKET_URI = re.compile(BUCKET_URI_PATTERN)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
DATASET_SUFFIXES = (".jsonl", ".json")


def resolve_model(model: str) -> str:
    """A built-in name, an absolute model directory, or a hub id (fetched on the node)."""
    if model in BUILTIN_MODELS:
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidModel(f"Model directory {model!r} has no config.json.")
        return str(path.resolve())
    if HUB_ID.match(model) and ".." not in model:
        return model
    raise InvalidModel(
        f"Model {model!r} is not a built-in ({', '.join(sorted(BUILTIN_MODELS))}), "
        "a model directory on the server, or a hub id like 'org/name'."
    )


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset as the job will read it; `report` is None for a bucket URI (read on the node)."""

    location: str
    report: DatasetReport | None


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
    return ResolvedDataset(str(path.resolve()), report)
