"""`Idempotency-Key`: a retried request gets the first answer instead of acting twice.

One file per (caller, key) under `$AINFINITY_HOME/idempotency/`, created exclusively (a hard
link of a complete temp file), so across workers exactly one request per key acts; the
others wait for its answer. A key lives 24 hours; a failed request frees its key again.

The acting request holds an `flock` on its claim from before the claim appears until the
answer is written. A process killed while acting loses the lock with its life, so a retry
that finds an unanswered claim it can lock takes the key over and acts itself (instead of
waiting out the 24 hours). A create that had already happened then answers 409 job_exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ainfinity.exceptions import IdempotencyConflict
from ainfinity.store.job_files import write_atomic

logger = logging.getLogger("ainfinity.store.idempotency")

KEY_TTL_SECONDS = 24 * 3600
# Temp files older than this belong to no live request (one lives for microseconds).
_STALE_TEMP_SECONDS = 60
# How long a retry waits for the first request with its key to finish acting.
WAIT_SECONDS = 30.0


def fingerprint(body: Any) -> str:
    """The same request body gives the same fingerprint, whatever the key order."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class IdempotencyKeys:
    """Remembered answers, keyed by who asked and their key."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "idempotency"

    def run(
        self,
        *,
        caller: str,
        key: str,
        operation: str,
        body_fingerprint: str,
        act: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        """Return `act()`'s answer, computed once per (caller, key) in 24 hours.

        Raises:
            IdempotencyConflict: the key was used for another operation or body, or the first
                request with it is still acting after WAIT_SECONDS.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()
        path = self.dir / f"{name}.json"
        mine = {"operation": operation, "fingerprint": body_fingerprint, "at": time.time()}
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            lock = self._claim(path, mine)
            if lock is not None:
                break
            record = self._read(path)
            if record is None:
                continue  # freed (a failed first attempt, or expired) meanwhile
            if time.time() - float(record.get("at", 0)) > KEY_TTL_SECONDS:
                path.unlink(missing_ok=True)
                continue
            if (record.get("operation"), record.get("fingerprint")) != (
                operation,
                body_fingerprint,
            ):
                raise IdempotencyConflict(
                    "This Idempotency-Key was already used with a different request."
                )
            if "response" in record:
                return dict(record["response"])
            lock = self._take_over(path)
            if lock is not None:
                logger.warning("idempotency key taken over from a request that died acting")
                break
            if time.monotonic() > deadline:
                raise IdempotencyConflict("A request with this Idempotency-Key is still running.")
            time.sleep(0.05)
        try:
            try:
                response = act()
            except BaseException:
                path.unlink(missing_ok=True)  # nothing was done: the key may be used again
                raise
            write_atomic(path, json.dumps({**mine, "response": response}).encode())
        finally:
            os.close(lock)
        return response

    @staticmethod
    def _claim(path: Path, record: dict[str, Any]) -> int | None:
        """Create the claim, locked before it is visible; returns the lock's descriptor."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(record))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.link(tmp, path)  # fails if the key is taken; readers never see a partial file
            return fd
        except FileExistsError:
            os.close(fd)
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, path: Path) -> int | None:
        """Lock an unanswered claim whose owner died; None while its owner lives."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Still the same claim, and still unanswered (the owner may have just finished).
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
            record = self._read(path)
            if same and record is not None and "response" not in record:
                return fd
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)
        return None

    def sweep(self) -> None:
        """Drop expired keys and temp files left by killed processes (start-up)."""
        if not self.dir.is_dir():
            return
        now = time.time()
        for entry in self.dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                age = now - entry.stat().st_mtime
                if entry.name.endswith(".tmp") and age > _STALE_TEMP_SECONDS:
                    entry.unlink()
                elif entry.suffix == ".json" and age > KEY_TTL_SECONDS:
                    entry.unlink()

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return record if isinstance(record, dict) else None
