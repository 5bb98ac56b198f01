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
from typing import Any, Literal, get_args

Method = Literal["full", "lora", "dpo"]
AttnImplementation = Literal["auto", "sdpa", "eager", "flash_attention_2"]
LrSchedulerType = Literal["linear", "cosine", "constant", "constant_with_warmup"]
LoraTargetKeyword = Literal["auto", "all-linear"]


class JobConfigError(ValueError):
    """The job config file is missing, not JSON, or has a field of the wrong type or range."""


@dataclass(frozen=True)
class TrainingHyperparameters:
    """Optimisation, data and checkpoint settings; `max_steps`, when set, overrides `epochs`."""

    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-5
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 1024
    seed: int = 42
    warmup_ratio: float = 0.0
    logging_steps: int = 1
    packing: bool = False
    # Learn only completions and assistant turns; prompts and other roles are context.
    completion_only_loss: bool = True
    gradient_checkpointing: bool = False
    attn_implementation: AttnImplementation = "auto"
    # None: no intermediate checkpoints, so a relaunch starts over.
    save_steps: int | None = 500
    # None: keep every checkpoint.
    save_total_limit: int | None = 2
    # None: evaluate at every checkpoint, or only at the end when there are none.
    eval_steps: int | None = None
    weight_decay: float = 0.0
    lr_scheduler_type: LrSchedulerType = "linear"


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapter settings. `target_modules`: layer names, `auto` (the model family's
    projections, `ainfinity.train.lora_targets`), or `all-linear` / None (every linear layer)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | LoraTargetKeyword | None = "auto"
    # Also write the base model with the adapter folded in, to output_dir/merged.
    merge: bool = False


@dataclass(frozen=True)
class DpoSettings:
    """Preference tuning: how far the policy may move from the reference (DPO's beta)."""

    beta: float = 0.1


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
    validation_dataset: Path | None = None
    # A LoRA adapter directory applied over `model` before training (continuing a fine-tuned
    # model): trained further with method `lora`, merged into the weights with `full`.
    adapter: Path | None = None
    # The seed a built-in model's weights are drawn from (None: the job's own seed).
    model_seed: int | None = None
    method: Method = "full"
    lora: LoraSettings = field(default_factory=LoraSettings)
    # DPO with `lora` given trains adapters (its `use_lora`); without, the whole model.
    use_lora: bool = False
    dpo: DpoSettings = field(default_factory=DpoSettings)
    hyperparameters: TrainingHyperparameters = field(default_factory=TrainingHyperparameters)
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    # The user's labels for the job; carried so a run can report them, never interpreted.
    metadata: dict[str, str] = field(default_factory=dict)


# Each numeric field's allowed range, as a test and the words an error message uses for it.
_LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hyperparameters.epochs": (lambda v: v > 0, "> 0"),
    "hyperparameters.max_steps": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.learning_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "hyperparameters.batch_size": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.max_seq_length": (lambda v: v >= 2, ">= 2"),
    "hyperparameters.seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    # Transformers reads a float warmup below 1 as a ratio and anything else as a step count.
    "hyperparameters.warmup_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "hyperparameters.logging_steps": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.save_steps": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.save_total_limit": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.eval_steps": (lambda v: v >= 1, ">= 1"),
    "hyperparameters.weight_decay": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "lora.r": (lambda v: v >= 1, ">= 1"),
    "lora.alpha": (lambda v: v >= 1, ">= 1"),
    "lora.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dpo.beta": (lambda v: 0 < v <= 10, "in (0, 10]"),
    "deepspeed.zero_stage": (lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
}

# The string enums, by the annotation name their fields use.
_CHOICES: dict[str, tuple[str, ...]] = {
    "Method": get_args(Method),
    "AttnImplementation": get_args(AttnImplementation),
    "LrSchedulerType": get_args(LrSchedulerType),
}


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


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
    elif kind in ("list[str]", "list[str] | LoraTargetKeyword"):
        keywords = get_args(LoraTargetKeyword) if kind != "list[str]" else ()
        ok = value in keywords or (
            isinstance(value, list) and bool(value) and all(map(_is_text, value))
        )
        kind = "a non-empty list of non-empty strings" + (
            f" or one of {', '.join(map(repr, keywords))}" if keywords else ""
        )
    elif kind in _CHOICES:
        if value not in _CHOICES[kind]:
            allowed = ", ".join(map(repr, _CHOICES[kind]))
            raise JobConfigError(f"{name} must be one of {allowed}, got {value!r}")
        ok = True
    else:
        ok = _is_text(value)
    if not ok:
        raise JobConfigError(f"{name} must be {kind}, got {value!r}")
    if name in _LIMITS:
        within, allowed = _LIMITS[name]
        if not within(value):
            raise JobConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


def _build(cls: type[Any], data: Any, where: str) -> Any:
    """Instantiate a flat dataclass from a JSON object (null: all defaults); refuse unknown keys."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise JobConfigError(f"{where} must be a JSON object")
    known = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise JobConfigError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    return cls(
        **{key: _check_value(f"{where}.{key}", value, known[key]) for key, value in data.items()}
    )


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
    validation = _check_value("validation_dataset", data.get("validation_dataset"), "str | None")
    adapter = _check_value("adapter", data.get("adapter"), "str | None")
    model_seed = _check_value("model_seed", data.get("model_seed"), "int | None")
    if model_seed is not None and not 0 <= model_seed < 2**32:
        raise JobConfigError(f"model_seed must be in [0, 2**32), got {model_seed!r}")
    deepspeed = _build(DeepSpeedSettings, data.get("deepspeed"), "deepspeed")
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
        validation_dataset=base / validation if validation is not None else None,
        adapter=base / adapter if adapter is not None else None,
        model_seed=model_seed,
        method=_check_value("method", data.get("method", "full"), "Method"),
        # Lora settings with method "full" are accepted and unused, as the contract says.
        lora=_build(LoraSettings, data.get("lora"), "lora"),
        use_lora=_check_value("use_lora", data.get("use_lora", False), "bool"),
        dpo=_build(DpoSettings, data.get("dpo"), "dpo"),
        hyperparameters=_build(
            TrainingHyperparameters, data.get("hyperparameters"), "hyperparameters"
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
