"""The deployment store: one directory per deployment under `$AINFINITY_HOME/deployments/`.

It keeps the job store's guarantees at the scale deployments come in (a few, not
thousands): a directory appears whole (staged, then renamed; a rename onto a taken name
fails, so one creator wins), every JSON file is replaced atomically, and a read-modify-write
holds an `flock` on the deployment's directory. Listing reads every record: there is no index.

The deployment's secret token (what its replicas ask every request for) is a file of its
own, mode 0600, never part of the record.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ainfinity.exceptions import DeploymentExists, DeploymentNotFound, StorageFull
from ainfinity.schema.deployment import DeploymentEvent, DeploymentRecord, DeploymentStatus
from ainfinity.schema.job import JOB_NAME_RE
from ainfinity.store.job_files import fsync_dir, write_atomic
from ainfinity.store.job_index import encode_cursor, time_key


@dataclass(frozen=True)
class DeploymentPaths:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / "deployment.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def task(self) -> Path:
        return self.root / "task.yaml"

    @property
    def next_task(self) -> Path:
        """The task a rolling update moves to; it replaces `task` once the update is done."""
        return self.root / "task.next.yaml"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def worker(self) -> Path:
        """A local deployment's worker: its socket, state and log."""
        return self.root / "worker"


@dataclass(frozen=True)
class DeploymentPage:
    deployments: list[DeploymentRecord]
    next_cursor: str | None


Change = Callable[[DeploymentRecord], list[DeploymentEvent] | None]


class DeploymentStore:
    """Reads and writes deployments under `home`; safe to share between processes."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "deployments"
        self.staging = home / "staging"

    def initialize(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def paths(self, name: str) -> DeploymentPaths:
        # The name is a path component: anything but a valid name is "not found".
        if not JOB_NAME_RE.match(name):
            raise DeploymentNotFound(f"No deployment named {name!r}.")
        return DeploymentPaths(self.dir / name)

    def exists(self, name: str) -> bool:
        return JOB_NAME_RE.match(name) is not None and (self.dir / name).is_dir()

    # -- create ----------------------------------------------------------------------------

    def create(
        self,
        record: DeploymentRecord,
        event: DeploymentEvent,
        *,
        task: bytes,
        token: str,
    ) -> None:
        """Write a new deployment whole, or nothing; `DeploymentExists` if the name is taken."""
        final = self.paths(record.name)
        if final.root.exists():
            raise DeploymentExists(f"A deployment named {record.name!r} already exists.")
        staged = DeploymentPaths(self.staging / f"deployment-{record.name}.{uuid.uuid4().hex}")
        try:
            staged.root.mkdir(mode=0o700)
            fd = os.open(staged.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(token)
            write_atomic(staged.task, task)
            write_atomic(staged.events, _event_line(event))
            write_atomic(staged.record, _record_bytes(record))
            try:
                os.rename(staged.root, final.root)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise DeploymentExists(
                        f"A deployment named {record.name!r} already exists."
                    ) from None
                raise
            fsync_dir(self.dir)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("The server's disk is full; nothing was kept.") from exc
            raise
        finally:
            if staged.root.exists():
                shutil.rmtree(staged.root, ignore_errors=True)

    # -- read ------------------------------------------------------------------------------

    def get(self, name: str) -> DeploymentRecord:
        try:
            data = self.paths(name).record.read_bytes()
        except FileNotFoundError:
            raise DeploymentNotFound(f"No deployment named {name!r}.") from None
        return DeploymentRecord.model_validate_json(data)

    def token(self, name: str) -> str:
        return self.paths(name).token.read_text(encoding="ascii").strip()

    def all(self) -> list[DeploymentRecord]:
        """Every readable deployment, newest first."""
        found = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.dir) as entries:
            for entry in entries:
                with contextlib.suppress(DeploymentNotFound, ValidationError, NotADirectoryError):
                    found.append(self.get(entry.name))
        found.sort(key=lambda r: (time_key(r.created_at), r.name), reverse=True)
        return found

    def page(
        self,
        *,
        limit: int,
        after: tuple[int, str] | None,
        status: DeploymentStatus | None,
        owner: str | None,
    ) -> DeploymentPage:
        records = [
            r
            for r in self.all()
            if (status is None or r.status == status)
            and (owner is None or r.owner == owner)
            and (after is None or (time_key(r.created_at), r.name) < after)
        ]
        page = records[:limit]
        more = len(records) > limit
        return DeploymentPage(page, encode_cursor(page[-1]) if more and page else None)

    def read_events(self, name: str) -> list[DeploymentEvent]:
        try:
            lines = self.paths(name).events.read_bytes().splitlines()
        except FileNotFoundError:
            raise DeploymentNotFound(f"No deployment named {name!r}.") from None
        events = []
        for line in lines:
            with contextlib.suppress(ValidationError):  # a torn last line after a crash
                events.append(DeploymentEvent.model_validate_json(line))
        return events

    # -- update ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[DeploymentPaths]:
        paths = self.paths(name)
        try:
            fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise DeploymentNotFound(f"No deployment named {name!r}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield paths
        finally:
            os.close(fd)

    def update(
        self, name: str, change: Change, *, files: dict[str, bytes] | None = None
    ) -> DeploymentRecord:
        """Apply `change` under the deployment's lock; it mutates the record and returns the
        events to append (None: leave it untouched). `files` (names in the deployment's
        directory) are written with it."""
        with self.locked(name) as paths:
            record = self.get(name)
            events = change(record)
            if events is None:
                return record
            for relative, data in (files or {}).items():
                write_atomic(paths.root / relative, data)
            if events:
                with open(paths.events, "ab") as fh:
                    fh.write(b"".join(_event_line(e) for e in events))
                    fh.flush()
                    os.fsync(fh.fileno())
            write_atomic(paths.record, _record_bytes(record))
            return record


def settle_next_task(paths: DeploymentPaths, *, keep: bool) -> None:
    """An update ended: its task becomes the task (`keep`), or is dropped. Under the lock."""
    if keep:
        with contextlib.suppress(FileNotFoundError):
            os.replace(paths.next_task, paths.task)
    else:
        paths.next_task.unlink(missing_ok=True)


def _record_bytes(record: DeploymentRecord) -> bytes:
    return record.model_dump_json(indent=2).encode()


def _event_line(event: DeploymentEvent) -> bytes:
    return event.model_dump_json().encode() + b"\n"
