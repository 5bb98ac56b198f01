"""A job's log, streamed from disk (`GET /jobs/{name}/logs`): whole, its last lines, or
followed as the run writes it, with or without the trainer's protocol lines.

Nothing here reads a log whole: a request costs one 64 kB block in memory at a time, however
big the file and however many clients read it. By default the `ainfinity-*` lines the
trainer prints for the control plane (metrics, done, error, dataset) are left out: people
read the one-line progress the trainer prints beside them, and the same records are at
`/metrics`. `raw` keeps every line.

A follower is an async generator per client, polling the file's size every
`stream_poll_seconds`: an idle follower costs a `stat` per poll and holds no thread.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_CHUNK = 64 * 1024
# The trainer's protocol lines (ainfinity.train.protocol), also behind a log collector's
# prefix such as SkyPilot's `(task, pid=1234) `.
_PROTOCOL_LINE = re.compile(rb"(?:^|\s)ainfinity-(?:metric|done|error|dataset|paused) \{")


def is_protocol_line(line: bytes) -> bool:
    return _PROTOCOL_LINE.search(line) is not None


def tail_offset(path: Path, lines: int, *, raw: bool = True) -> int:
    """Where the last `lines` lines of the file start (its end for 0; 0 when missing); when
    not `raw`, only lines people read are counted. A last line without its newline yet
    counts as a line, as in `tail`."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        wanted = lines
        for start, line in _lines_backwards(fh, end):
            if raw or not is_protocol_line(line):
                wanted -= 1
                if wanted == 0:
                    return start
        return 0


def _lines_backwards(fh: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) from the file's last line to its first, a block at a time."""
    position, tail = end, b""
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        fh.seek(position)
        block = fh.read(step) + tail
        # The block's first line may begin in the block before: kept for the next round.
        first_newline = block.find(b"\n") if position > 0 else -1
        tail, body = block[: first_newline + 1], block[first_newline + 1 :]
        offset = position + first_newline + 1
        lines = body.splitlines(keepends=True)
        starts = []
        for line in lines:
            starts.append(offset)
            offset += len(line)
        yield from reversed(list(zip(starts, lines, strict=True)))
    if tail:
        yield 0, tail


class LineFilter:
    """Drops protocol lines from a byte stream cut anywhere, holding back a partial line."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.partial + chunk
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return self._keep(data[:cut])

    def flush(self) -> bytes:
        rest, self.partial = self.partial, b""
        return self._keep(rest)

    def flush_idle(self) -> bytes:
        """A follower with nothing new sends the partial line it holds, unless it may be the
        start of a protocol line (the trainer writes those whole: the rest is coming)."""
        if b"ainfinity-" in self.partial or b"ainfinity-".startswith(self.partial.lstrip()):
            return b""
        return self.flush()

    @staticmethod
    def _keep(data: bytes) -> bytes:
        return b"".join(
            line for line in data.splitlines(keepends=True) if not is_protocol_line(line)
        )


def read_chunks(path: Path, *, start: int, raw: bool) -> Iterator[bytes]:
    """The file from `start` to its end, a block at a time (nothing when missing)."""
    keep = None if raw else LineFilter()
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        fh.seek(start)
        while block := fh.read(_CHUNK):
            out = block if keep is None else keep.feed(block)
            if out:
                yield out
    if keep is not None and (rest := keep.flush()):
        yield rest


async def follow_file(
    path: Path,
    *,
    start: int,
    finished: Callable[[], bool],
    poll_seconds: float,
    stopping: Callable[[], bool],
    raw: bool = True,
) -> AsyncIterator[bytes]:
    """The file's bytes from `start`, as they are written, until `finished()` says no more
    will come and the rest was sent, or the server is stopping."""
    keep = None if raw else LineFilter()
    position = start
    while not stopping():
        # Asked before reading: whatever was written before the job ended is read below.
        done = finished()
        try:
            with open(path, "rb") as fh:
                fh.seek(position)
                chunk = fh.read(_CHUNK)
        except FileNotFoundError:
            chunk = b""  # not started yet
        if chunk:
            position += len(chunk)
            out = chunk if keep is None else keep.feed(chunk)
            if out:
                yield out
            if len(chunk) == _CHUNK:
                continue  # more is waiting
        if done:
            if keep is not None and (rest := keep.flush()):
                yield rest
            return
        if keep is not None and (rest := keep.flush_idle()):
            yield rest
        await asyncio.sleep(poll_seconds)
