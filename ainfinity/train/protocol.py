"""The lines a training process prints for the control plane, and how to read them back.

Every event is one stdout line, `<prefix> <json object>`, so the same parser works on a local
process's pipe and on a cloud job's log stream. Standard library only: the API server imports it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, TextIO

METRIC_PREFIX = "ainfinity-metric"
DONE_PREFIX = "ainfinity-done"
ERROR_PREFIX = "ainfinity-error"
DATASET_PREFIX = "ainfinity-dataset"
"""The training dataset's token statistics and format, printed once before training."""
PAUSED_PREFIX = "ainfinity-paused"
"""Asked to pause (SIGUSR1, or SIGTERM once training runs): a complete checkpoint was saved at
the step the line names, and the trainer exits 0 without finishing."""
EVENT_PREFIXES = (METRIC_PREFIX, DONE_PREFIX, ERROR_PREFIX, DATASET_PREFIX, PAUSED_PREFIX)

RESUME_NOTICE = "ainfinity: resuming from"
"""Plain-text line (not an event): `ainfinity: resuming from <checkpoint dir> (step N)`."""

METRICS_FILE_ENV = "AINFINITY_METRICS_FILE"
"""Environment variable naming a JSONL file that receives each metric record as well as stdout."""

_EVENT_RE = re.compile(
    r"(?:^|\s)(?P<kind>" + "|".join(map(re.escape, EVENT_PREFIXES)) + r") (?P<payload>\{.*\})\s*$"
)


class ErrorCode(str, Enum):
    """Failures the trainer recognises; anything else exits non-zero without an error line."""

    INVALID_DATASET = "invalid_dataset"
    MODEL_LOAD_ERROR = "model_load_error"
    CUDA_OOM = "cuda_oom"
    NAN_LOSS = "nan_loss"
    NCCL_ERROR = "nccl_error"


@dataclass(frozen=True)
class TrainerEvent:
    """One parsed event line: its prefix and its JSON payload."""

    kind: str
    payload: dict[str, Any]


def format_event(prefix: str, payload: dict[str, Any]) -> str:
    """Render an event line; NaN and infinity are refused because JSON has no spelling for them."""
    return f"{prefix} {json.dumps(payload, allow_nan=False, separators=(',', ':'))}"


def emit_event(prefix: str, payload: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print an event line and flush at once, so a log tailer sees it before the process ends."""
    print(format_event(prefix, payload), file=stream or sys.stdout, flush=True)


def parse_event(line: str) -> TrainerEvent | None:
    """Return the event on a log line, or None for any other line (including garbled events).

    The event may follow other text: log collectors such as SkyPilot's prefix each line.
    """
    match = _EVENT_RE.search(line)
    if match is None:
        return None
    try:
        payload = json.loads(match.group("payload"))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return TrainerEvent(kind=match.group("kind"), payload=payload)
