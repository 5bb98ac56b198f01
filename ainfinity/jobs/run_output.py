"""Readers for what a run leaves in its job directory: log tail, metrics, exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ainfinity.schema.activity import Metric
from ainfinity.train.protocol import (
    DONE_PREFIX,
    ERROR_PREFIX,
    METRIC_PREFIX,
    PAUSED_PREFIX,
    parse_event,
)

_BLOCK = 64 * 1024


def tail_bytes(path: Path, lines: int) -> bytes:
    """The last `lines` lines of a file, read backwards so a big log costs little."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return b""
    with fh:
        end = fh.seek(0, os.SEEK_END)
        position, chunks, newlines = end, [], 0
        while position > 0 and newlines <= lines:
            step = min(_BLOCK, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
        data = b"".join(reversed(chunks))
    trailing_newline = data.endswith(b"\n")
    parts = data.splitlines()[-lines:] if lines > 0 else []
    text = b"\n".join(parts)
    return text + b"\n" if parts and trailing_newline else text


def read_metrics(path: Path) -> list[Metric]:
    """Every step's record, in step order; eval records follow their step's training record.

    A run resumed from a checkpoint redoes the steps after it and logs them again: the newest
    record of a step is the one that counts, as for the model it describes.
    """
    latest: dict[tuple[int, bool], Metric] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        metric = _parse_metric(line)
        if metric is not None:
            latest[(metric.step, metric.eval_loss is not None)] = metric
    return [latest[key] for key in sorted(latest)]


def latest_metrics(path: Path, *, window: int = 32) -> tuple[Metric | None, Metric | None]:
    """The newest training record and the newest eval record among the file's last lines."""
    train: Metric | None = None
    evaluation: Metric | None = None
    for line in reversed(tail_bytes(path, window).splitlines()):
        metric = _parse_metric(line)
        if metric is None:
            continue
        if train is None and metric.loss is not None:
            train = metric
        if evaluation is None and metric.eval_loss is not None:
            evaluation = metric
        if train is not None and evaluation is not None:
            break
    return train, evaluation


def starting_eval_loss(path: Path) -> float | None:
    """The starting model's validation loss: the eval record of step 0, which the trainer
    writes before any training record (so it is among the file's first lines)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_BLOCK)
    except FileNotFoundError:
        return None
    for line in head.splitlines()[:16]:
        metric = _parse_metric(line)
        if metric is not None and metric.step == 0 and metric.eval_loss is not None:
            return metric.eval_loss
    return None


def last_outcome(path: Path) -> str | None:
    """The kind of the run's last `done`, `paused` or `error` line (None: none of them)."""
    for line in reversed(tail_bytes(path, 200).decode("utf-8", errors="replace").splitlines()):
        event = parse_event(line)
        if event is not None and event.kind in (DONE_PREFIX, PAUSED_PREFIX, ERROR_PREFIX):
            return event.kind
    return None


def failure_log(path: Path, lines: int = 20) -> list[str]:
    """The last lines a failed run printed, without its metric lines (those are in /metrics)."""
    text = tail_bytes(path, lines * 4).decode("utf-8", errors="replace")
    kept = [
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(METRIC_PREFIX)
    ]
    return kept[-lines:]


def _parse_metric(line: bytes) -> Metric | None:
    # The trainer may be writing the last line right now: a torn line is simply skipped.
    try:
        return Metric.model_validate_json(line)
    except ValidationError:
        return None


def read_exit_status(path: Path) -> dict[str, Any] | None:
    try:
        status = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return status if isinstance(status, dict) else None
