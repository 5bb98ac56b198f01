"""Turn how a run ended into a `failure_reason` that a person can act on."""

from __future__ import annotations

import re
from pathlib import Path

from ainfinity.jobs.run_output import tail_bytes
from ainfinity.train.protocol import ERROR_PREFIX, parse_event

# Failures the trainer could not name itself (it died in a library, or a rank crashed).
_PATTERNS = (
    (re.compile(r"CUDA out of memory|OutOfMemoryError"), "cuda_oom", "the GPU ran out of memory"),
    (
        re.compile(r"NCCL (error|WARN.*failed)|ncclInternalError", re.I),
        "nccl_error",
        "NCCL communication between GPUs failed",
    ),
)


# SIGKILL, as the runner sees it (the trainer itself, -9) or through a shell (128 + 9).
_KILLED = (-9, 137)


def classify_failure(log: Path, returncode: int | None, *, memory_bytes: int | None = None) -> str:
    """`<code>: <message>`; the trainer's own `ainfinity-error` line wins when present.

    `memory_bytes` is the job's resident memory when it was last seen running."""
    lines = tail_bytes(log, 200).decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        event = parse_event(line)
        if event is not None and event.kind == ERROR_PREFIX:
            code, msg = event.payload.get("code"), event.payload.get("msg")
            if isinstance(code, str) and isinstance(msg, str):
                return f"{code}: {msg}"
    text = "\n".join(lines)
    for pattern, code, message in _PATTERNS:
        if pattern.search(text):
            return f"{code}: {message}"
    last = _last_line(lines)
    if returncode in _KILLED:
        seen = (
            f"; it used {memory_bytes / 2**30:.2f} GiB of memory when last seen"
            if memory_bytes
            else ""
        )
        return (
            "killed: the training process was killed with SIGKILL. The usual cause is the "
            "kernel's out-of-memory killer (see `dmesg`): give the job more memory, or make it "
            f"need less (a smaller batch_size or max_seq_length, LoRA){seen}"
        )
    if returncode == 2 and "finetune: error:" in text:
        # argparse's exit: the job config or command line was refused before training.
        return f"invalid_job_config: {last[:300]}"
    if returncode is None:
        how = "the job's process ended without recording an exit status (killed?)"
    elif returncode < 0:
        how = f"the job's process was killed by signal {-returncode}"
    else:
        how = f"the job's process exited with status {returncode}"
    return f"unknown: {how}" + (f"; last output: {last[:300]}" if last else "")


def _last_line(lines: list[str]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip()), "")
