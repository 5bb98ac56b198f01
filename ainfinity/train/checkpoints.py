"""The checkpoints in a job's output directory, and which of them a relaunch may resume from.

The HF Trainer writes `checkpoint-<step>/` directories. A spot preemption can stop it half way
through one, so the trainer writes a marker file into each checkpoint only after every rank has
finished saving it; a directory without a valid marker is never resumed from. Standard library
only: the API server imports this to list a job's checkpoints. Nothing here raises for a strange
directory: whatever cannot be read is reported as an incomplete checkpoint, or skipped.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"
MARKER_NAME = "ainfinity-checkpoint.json"
"""Written last into a checkpoint directory; its presence is what makes the checkpoint complete."""

_NAME_RE = re.compile(r"^checkpoint-(\d{1,18})$")


@dataclass(frozen=True)
class CheckpointInfo:
    """One `checkpoint-<step>` directory; `loss` and `eval_loss` come from its marker."""

    name: str
    path: Path
    step: int
    loss: float | None
    eval_loss: float | None
    complete: bool
    saved_at: datetime


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read_marker(path: Path, step: int) -> dict[str, Any] | None:
    """The marker's fields, or None when it is missing, unreadable or names another step."""
    try:
        data = json.loads((path / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    # A directory renamed or copied under another step's name is not that step's checkpoint.
    if not isinstance(data, dict) or data.get("step") != step:
        return None
    return data


def _saved_at(path: Path, marker: dict[str, Any] | None) -> datetime:
    stamp = marker.get("saved_at") if marker else None
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    except (OSError, OverflowError, ValueError):
        return datetime.fromtimestamp(0, tz=timezone.utc)


def _inspect(path: Path) -> CheckpointInfo | None:
    match = _NAME_RE.match(path.name)
    if match is None:
        return None
    try:
        if not path.is_dir():
            return None
    except OSError:
        return None
    step = int(match.group(1))
    marker = _read_marker(path, step)
    return CheckpointInfo(
        name=path.name,
        path=path,
        step=step,
        loss=_float_or_none(marker.get("loss")) if marker else None,
        eval_loss=_float_or_none(marker.get("eval_loss")) if marker else None,
        complete=marker is not None,
        saved_at=_saved_at(path, marker),
    )


def list_checkpoints(output_dir: str | Path) -> list[CheckpointInfo]:
    """Every `checkpoint-<step>` directory in `output_dir`, oldest step first.

    Incomplete ones are included with `complete=False`; a missing or unreadable `output_dir`
    has no checkpoints.
    """
    try:
        entries = list(Path(output_dir).iterdir())
    except OSError:
        return []
    found = [info for info in map(_inspect, entries) if info is not None]
    return sorted(found, key=lambda info: info.step)


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint a relaunch can resume from, or None when there is none."""
    complete = [info for info in list_checkpoints(output_dir) if info.complete]
    return complete[-1].path if complete else None


def write_marker(
    checkpoint_dir: Path,
    *,
    step: int,
    loss: float | None,
    eval_loss: float | None,
) -> None:
    """Mark a checkpoint complete; call it once every rank has finished writing the checkpoint.

    The marker goes in through a rename, so a reader sees either no marker or a whole one.
    """
    marker = {
        "step": step,
        "loss": _float_or_none(loss),
        "eval_loss": _float_or_none(eval_loss),
        "saved_at": datetime.now(timezone.utc).isoformat(),
    }
    partial = checkpoint_dir / f".{MARKER_NAME}.tmp"
    with partial.open("w", encoding="utf-8") as sink:
        json.dump(marker, sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, checkpoint_dir / MARKER_NAME)


def prune_checkpoints(output_dir: str | Path, *, keep: int | None) -> list[Path]:
    """Delete what a relaunch no longer needs; return the deleted directories.

    Keeps the `keep` newest complete checkpoints (all of them when `keep` is None) and any
    incomplete one newer than the newest complete checkpoint (it may be being written). Only
    ever runs after a new marker was written, so a preemption at any moment still leaves a
    complete checkpoint behind.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 or None, got {keep}")
    checkpoints = list_checkpoints(output_dir)
    complete = [info for info in checkpoints if info.complete]
    if not complete:
        return []
    newest = complete[-1].step
    kept = {info.step for info in complete[-keep:]} if keep is not None else None
    doomed = [
        info.path
        for info in checkpoints
        if (not info.complete and info.step < newest)
        or (info.complete and kept is not None and info.step not in kept)
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def discard_incomplete_after(output_dir: str | Path, step: int) -> list[Path]:
    """Delete incomplete checkpoints newer than `step`: the relaunch redoes and resaves them.

    Otherwise a half-written directory's stale files would mix with the new save's.
    """
    doomed = [
        info.path for info in list_checkpoints(output_dir) if not info.complete and info.step > step
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
