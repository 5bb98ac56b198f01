"""One pass at a time over shared state, across threads and worker processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_pass(mutex: threading.Lock, lock_file: Path) -> Iterator[bool]:
    """Yield True when this thread holds both `mutex` and an `flock` on `lock_file`, False
    (at once, without waiting) when another thread or process is doing the pass."""
    if not mutex.acquire(blocking=False):
        yield False
        return
    try:
        fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
    finally:
        mutex.release()
