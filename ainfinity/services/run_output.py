"""Readers for what a run leaves in its job directory: log tail, metrics, exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ainfinity.schema.activity import Metric

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


def read_log(path: Path, tail: int | None) -> str:
    if tail is None:
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
    return tail_bytes(path, tail).decode("utf-8", errors="replace")


def read_metrics(path: Path) -> list[Metric]:
    metrics = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        metric = _parse_metric(line)
        if metric is not None:
            metrics.append(metric)
    return metrics


def last_metric(path: Path) -> Metric | None:
    for line in reversed(tail_bytes(path, 4).splitlines()):
        metric = _parse_metric(line)
        if metric is not None:
            return metric
    return None


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
