"""Where a job's files live, and how any of them is replaced without readers ever seeing
half a file."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

# `write_atomic`'s temp names (other temp files, e.g. the job runner's, are not ours).
ATOMIC_TEMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


@dataclass(frozen=True)
class JobPaths:
    """Where each of a job's files lives."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "job.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def task(self) -> Path:
        return self.root / "task.yaml"

    @property
    def workdir(self) -> Path:
        return self.root / "workdir"

    @property
    def job_config(self) -> Path:
        return self.workdir / "job_config.json"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def exit_status(self) -> Path:
        return self.root / "exit.json"

    @property
    def run_script(self) -> Path:
        return self.root / "run.sh"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
