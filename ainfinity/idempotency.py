"""`Idempotency-Key`: a retried request gets the first answer instead of acting twice.

One file per (caller, key) under `$AINFINITY_HOME/idempotency/`, created exclusively (a hard
link of a complete temp file), so across workers exactly one request per key acts; the
others wait for its answer. A key lives 24 hours; a failed request frees its key again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ainfinity.exceptions import IdempotencyConflict
from ainfinity.store import write_atomic

KEY_TTL_SECONDS = 24 * 3600
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
            if self._claim(path, mine):
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
            if time.monotonic() > deadline:
                raise IdempotencyConflict("A request with this Idempotency-Key is still running.")
            time.sleep(0.05)
        try:
            response = act()
        except BaseException:
            path.unlink(missing_ok=True)  # nothing was done: the key may be used again
            raise
        write_atomic(path, json.dumps({**mine, "response": response}).encode())
        return response

    @staticmethod
    def _claim(path: Path, record: dict[str, Any]) -> bool:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(record))
        try:
            os.link(tmp, path)  # fails if the key is taken; readers never see a partial file
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return record if isinstance(record, dict) else None
