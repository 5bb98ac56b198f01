"""The event journal: one append-only file, `$AINFINITY_HOME/journal.jsonl`, that holds
every job event, progress change and metric record in the order they were written; the
Server-Sent Event streams tail it.

- A batch of lines is written with one `write` on an `O_APPEND` descriptor: lines from
  several threads and worker processes never interleave, and each worker sees the others'.
- A line's id is the byte offset just past it. Ids only grow, are the same in every worker
  and survive a restart, so `Last-Event-ID` is a place to seek to.
- It is derived data: each job's own files stay the truth. It is not fsynced (a machine
  crash may lose its last lines; an id beyond the end is then treated as unknown), and a
  reader only takes lines that end in a newline, so a line being written is never half read.
- It grows with activity, not with time: a few hundred bytes per event, metric record and
  progress change. Nothing rotates it; with the server stopped it can be deleted, and
  clients then start over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal."""

    id: int
    job: str
    owner: str | None
    kind: str
    data: dict[str, Any]


def entry_line(job: str, owner: str | None, kind: str, data: dict[str, Any]) -> bytes:
    # "job" first: a reader looking for one job's lines can match the line's prefix.
    line = {"job": job, "owner": owner, "kind": kind, "data": data}
    return json.dumps(line, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def job_prefix(job: str) -> bytes:
    """How every line about `job` starts."""
    return b'{"job":' + json.dumps(job).encode() + b","


class Journal:
    """Appends to and reads `path`; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, lines: list[bytes]) -> int:
        """Write `lines` (from `entry_line`) as one block; returns the offset it starts at."""
        data = b"".join(lines)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, data)
            # With O_APPEND the write lands at the end, wherever that is now: the
            # descriptor's position afterwards is where this block ends.
            end = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
        return end - len(data)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def align(self, offset: int) -> int:
        """`offset` if a line starts there, else the start of the next line."""
        if offset <= 0:
            return 0
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset - 1)
                previous = fh.read(1)
                if previous in (b"\n", b""):
                    return offset
                rest = fh.read(_READ_BYTES)
        except FileNotFoundError:
            return 0
        newline = rest.find(b"\n")
        return offset + newline + 1 if newline >= 0 else offset + len(rest)

    def read(self, offset: int, *, prefix: bytes = b"") -> tuple[list[JournalEntry], int, bool]:
        """Complete lines from `offset` (up to about a megabyte), those starting with
        `prefix` parsed; returns them, the offset to read on from, and whether that is
        the end of the file."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(_READ_BYTES)
                at_end = len(chunk) < _READ_BYTES
        except FileNotFoundError:
            return [], offset, True
        complete = chunk.rfind(b"\n") + 1
        if complete == 0 and not at_end:
            # One line longer than a read: nothing writes those; step over it.
            return [], offset + len(chunk), False
        entries = []
        position = offset
        for line in chunk[:complete].splitlines(keepends=True):
            position += len(line)
            if line.startswith(prefix):
                entry = _parse(line, position)
                if entry is not None:
                    entries.append(entry)
        return entries, offset + complete, at_end and complete == len(chunk)


def _parse(line: bytes, end: int) -> JournalEntry | None:
    try:
        raw = json.loads(line)
        return JournalEntry(
            id=end, job=raw["job"], owner=raw["owner"], kind=raw["kind"], data=raw["data"]
        )
    except (ValueError, KeyError, TypeError):
        return None
