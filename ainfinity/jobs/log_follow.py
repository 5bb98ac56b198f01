"""Following a job's log as the run writes it (`GET /jobs/{name}/logs?follow=true`).

One async generator per client, polling the file's size every `stream_poll_seconds`: an
idle follower costs a `stat` per poll and holds no thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

_CHUNK = 64 * 1024


def tail_offset(path: Path, lines: int) -> int:
    """Where the last `lines` lines of the file start (its end for 0; 0 when missing).

    A last line without its newline yet counts as a line, as in `tail`."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        position = end
        # The newline that ends the last line does not start a line.
        fh.seek(max(end - 1, 0))
        wanted = lines + 1 if fh.read(1) == b"\n" else lines
        while position > 0:
            step = min(_CHUNK, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step)
            index = len(chunk)
            while True:
                index = chunk.rfind(b"\n", 0, index)
                if index < 0:
                    break
                wanted -= 1
                if wanted == 0:
                    return position + index + 1
        return 0


async def follow_file(
    path: Path,
    *,
    start: int,
    finished: Callable[[], bool],
    poll_seconds: float,
    stopping: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """The file's bytes from `start`, as they are written, until `finished()` says no more
    will come and the rest was sent, or the server is stopping."""
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
            yield chunk
            if len(chunk) == _CHUNK:
                continue  # more is waiting
        if done:
            return
        await asyncio.sleep(poll_seconds)
