"""The job config file the control plane writes for one training run, parsed defensively.

The file is data from an API client: every value is type-checked here and none of it ever
reaches a shell. Standard library only, so the API server may import it to write the same shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class JobConfigError(ValueError):
    """The job config file is missing, not JSON, or has a field of the wrong type or range."""


@dataclass(frozen=True)
class TrainingHyperparameters:
    """Optimisation settings; `max_steps`, when set, overrides `epochs`."""

    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-5
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 1024
    seed: int = 42
    warmup_ratio: float = 0.0
    logging_steps: int = 1


@dataclass(frozen=True)
class DeepSpeedSettings:
    """ZeRO stage and CPU offload; used only when the trainer runs with `--deepspeed`."""

    zero_stage: int = 2
    offload: bool = False


@dataclass(frozen=True)
class JobConfig:
    """One training run: what to train, on what, where to write it, and how."""

    name: str
    model: str
    dataset: Path
    output_dir: Path
    hyperparameters: TrainingHyperparameters = field(default_factory=TrainingHyperparameters)
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    # The user's labels for the job; carried so a run can report them, never interpreted.
    metadata: dict[str, str] = field(default_factory=dict)


# Each numeric field's allowed range, as a test and the words an error message uses for it.
_LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v >= 1, ">= 1"),
    "learning_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "max_seq_length": (lambda v: v >= 2, ">= 2"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    # Transformers reads a float warmup below 1 as a ratio and anything else as a step count.
    "warmup_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "logging_steps": (lambda v: v >= 1, ">= 1"),
    "zero_stage": (lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
}


def _check_value(name: str, value: Any, annotation: str) -> Any:
    """Return `value` when it fits the field's annotation and range, else raise."""
    optional = annotation.endswith("| None")
    if value is None:
        if optional:
            return None
        raise JobConfigError(f"{name} may not be null")
    kind = annotation.removesuffix(" | None")
    # bool is an int subclass in Python, but `"batch_size": true` is a client bug, not a 1.
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str) and bool(value.strip()) and "\x00" not in value
    if not ok:
        raise JobConfigError(f"{name} must be {kind}, got {value!r}")
    if name in _LIMITS:
        within, allowed = _LIMITS[name]
        if not within(value):
            raise JobConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


def _build(cls: type[Any], data: Any, where: str) -> Any:
    """Instantiate a flat dataclass from a JSON object, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise JobConfigError(f"{where} must be a JSON object")
    known = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise JobConfigError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    return cls(**{key: _check_value(key, value, known[key]) for key, value in data.items()})


def parse_job_config(data: Any, *, base_dir: Path | None = None) -> JobConfig:
    """Validate a decoded job config; relative paths resolve against `base_dir` (default cwd)."""
    if not isinstance(data, dict):
        raise JobConfigError("the job config must be a JSON object")
    missing = [key for key in ("name", "model", "dataset", "output_dir") if key not in data]
    if missing:
        raise JobConfigError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - {f.name for f in fields(JobConfig)})
    if unknown:
        raise JobConfigError(f"unknown field(s): {', '.join(unknown)}")
    base = base_dir or Path.cwd()
    strings = {key: _check_value(key, data[key], "str") for key in ("name", "model")}
    paths = {key: base / _check_value(key, data[key], "str") for key in ("dataset", "output_dir")}
    deepspeed = _build(DeepSpeedSettings, data.get("deepspeed", {}), "deepspeed")
    if deepspeed.offload and deepspeed.zero_stage < 2:
        raise JobConfigError("deepspeed.offload needs zero_stage 2 or 3")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise JobConfigError("metadata must be an object of strings")
    return JobConfig(
        **strings,
        **paths,
        hyperparameters=_build(
            TrainingHyperparameters, data.get("hyperparameters", {}), "hyperparameters"
        ),
        deepspeed=deepspeed,
        metadata=metadata,
    )


def load_job_config(path: str | Path) -> JobConfig:
    """Read and validate a job config JSON file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise JobConfigError(f"cannot read job config {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise JobConfigError("the job config is not valid UTF-8") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobConfigError(f"the job config is not valid JSON: {exc}") from exc
    return parse_job_config(data)
