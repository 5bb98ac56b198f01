"""Turn how a run ended into a `failure_reason` that a person can act on."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ainfinity.services.run_output import tail_bytes

_ERROR_PREFIX = "ainfinity-error "
_PATTERNS = (
    (re.compile(r"CUDA out of memory|OutOfMemoryError"), "cuda_oom", "the GPU ran out of memory"),
    (
        re.compile(r"NCCL (error|WARN.*failed)|ncclInternalError", re.I),
        "nccl_error",
        "NCCL communication between GPUs failed",
    ),
)


def classify_failure(log: Path, returncode: int | None) -> str:
    """`<code>: <message>`; the trainer's own `ainfinity-error` line wins when present."""
    lines = tail_bytes(log, 200).decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith(_ERROR_PREFIX):
            try:
                error = json.loads(line[len(_ERROR_PREFIX) :])
                return f"{error['code']}: {error['msg']}"
            except (ValueError, KeyError, TypeError):
                break
    text = "\n".join(lines)
    for pattern, code, message in _PATTERNS:
        if pattern.search(text):
            return f"{code}: {message}"
    if returncode is None:
        how = "the job's process ended without recording an exit status (killed?)"
    elif returncode < 0:
        how = f"the job's process was killed by signal {-returncode}"
    else:
        how = f"the job's process exited with status {returncode}"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"unknown: {how}" + (f"; last output: {last[:300]}" if last else "")
