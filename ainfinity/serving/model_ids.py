"""Model ids: `ft:<base>:<job>` for what a job produced (`ft:<base>:<suffix>:<job>` with a
suffix), `...:ckpt-<step>` for one of its checkpoints, and plain names for base models."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ainfinity.schema.job import JOB_NAME_RE

FT_PREFIX = "ft:"
_CHECKPOINT = re.compile(r"^ckpt-([0-9]{1,18})$")


def base_segment(model: str) -> str:
    """The last path segment of a base model: `org/SmolLM2-135M` and `/models/SmolLM2-135M`
    both give `SmolLM2-135M`; a fine-tuned id gives its own base segment."""
    if model.startswith(FT_PREFIX):
        return model.split(":")[1]
    return model.rstrip("/").rsplit("/", 1)[-1]


def fine_tuned_id(base_model: str, job: str, suffix: str | None = None) -> str:
    parts = [base_segment(base_model), *([suffix] if suffix else []), job]
    return FT_PREFIX + ":".join(parts)


def checkpoint_id(model_id: str, step: int) -> str:
    return f"{model_id}:ckpt-{step}"


@dataclass(frozen=True)
class FineTunedId:
    """A parsed `ft:` id: the job that made it, and the checkpoint step it names, if any."""

    model_id: str
    job: str
    step: int | None


def parse_fine_tuned(model_id: str) -> FineTunedId | None:
    """The job (and checkpoint) a `ft:` id names, or None for anything else.

    Only the shape is checked here: the job's record decides whether the id is its model."""
    if not model_id.startswith(FT_PREFIX):
        return None
    parts = model_id[len(FT_PREFIX) :].split(":")
    step = None
    checkpoint = _CHECKPOINT.match(parts[-1]) if len(parts) >= 3 else None
    if checkpoint is not None:
        step = int(checkpoint.group(1))
        parts = parts[:-1]
    if len(parts) < 2 or not all(parts) or not JOB_NAME_RE.match(parts[-1]):
        return None
    return FineTunedId(model_id=FT_PREFIX + ":".join(parts), job=parts[-1], step=step)
