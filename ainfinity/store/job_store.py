"""The local JSON job store: one directory per job under `$AINFINITY_HOME/jobs/<name>/`.

Guarantees, across threads and processes (several uvicorn workers):
- a job directory appears whole: it is staged elsewhere and renamed into place, and a
  rename onto an existing (non-empty) job directory fails, so exactly one creator wins;
- every JSON file is replaced atomically (temp file, fsync, rename): readers never see
  half a file;
- read-modify-write of a job happens under an exclusive `flock` on its directory;
- creating or updating a job touches only that job's files, whatever the store holds;
- listing reads a page's records only, found through a derived index (`job_index.py`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError

from ainfinity.exceptions import JobExists, JobNotFound, StorageFull
from ainfinity.schema.activity import Event
from ainfinity.schema.job import JOB_NAME_RE, JobRecord, JobStatus
from ainfinity.store.job_files import ATOMIC_TEMP, JobPaths, fsync_dir, write_atomic
from ainfinity.store.job_index import JobIndex, JobPage, decode_cursor, matches, page_of, time_key

logger = logging.getLogger("ainfinity.store.job_store")

_STALE_STAGING_SECONDS = 300

# Called with a job's record and its new events as they are written (the event journal,
# webhook markers); in `update`, under the job's lock and before the record is replaced.
WriteHook = Callable[[JobRecord, list[Event]], None]


class JobStore:
    """Reads and writes jobs under `home`; safe to share between processes."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.jobs_dir = home / "jobs"
        self.staging_dir = home / "staging"
        self.trash_dir = home / "trash"
        self.active_dir = home / "active"
        self.index = JobIndex(home / "index.sqlite3")
        self.write_hooks: list[WriteHook] = []

    def initialize(self) -> None:
        """Create the store's directories and make sure the list index exists, building it
        from the records when it is missing or unreadable (idempotent; every worker calls
        it at start-up)."""
        for directory in (self.jobs_dir, self.staging_dir, self.trash_dir, self.active_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.index.open(records=self._all_records())

    def _all_records(self) -> Iterator[JobRecord]:
        with os.scandir(self.jobs_dir) as entries:
            for entry in entries:
                with contextlib.suppress(JobNotFound, ValidationError, NotADirectoryError):
                    yield self.get(entry.name)

    # -- paths -----------------------------------------------------------------------------

    def paths(self, name: str) -> JobPaths:
        # The name is also a path component: anything but a valid job name is "not found",
        # which keeps `..`, slashes and NUL bytes out of every path built here.
        if not JOB_NAME_RE.match(name):
            raise JobNotFound()
        return JobPaths(self.jobs_dir / name)

    def exists(self, name: str) -> bool:
        return JOB_NAME_RE.match(name) is not None and (self.jobs_dir / name).is_dir()

    # -- create ----------------------------------------------------------------------------

    def create(self, record: JobRecord, event: Event, files: dict[str, bytes]) -> None:
        """Write a new job with its first event and extra files (relative paths), all or none.

        Raises `JobExists` if the name is taken, including by a concurrent creator.
        """
        final = self.paths(record.name)
        if final.root.exists():
            raise JobExists(f"A job named {record.name!r} already exists.")
        staged = JobPaths(self.staging_dir / f"{record.name}.{uuid.uuid4().hex}")
        try:
            staged.root.mkdir()
            for relative, data in files.items():
                target = staged.root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, data)
            write_atomic(staged.events, _event_line(event))
            write_atomic(staged.record, _record_bytes(record))
            # Mark active first: a marker without a job is dropped by the reconciler, while a
            # job without a marker would never be launched.
            self._mark_active(record.name)
            try:
                os.rename(staged.root, final.root)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise JobExists(f"A job named {record.name!r} already exists.") from None
                raise
            fsync_dir(self.jobs_dir)
            # Again: a reconciler that found no job under this name a moment ago (a delete
            # just before this create) may have dropped the marker in between.
            self._mark_active(record.name)
            # After the rename: a row never points at a job that is not there yet. A crash
            # before this line leaves a job without a row, which start-up adds back.
            self.index.put(record)
            self._run_write_hooks(record, [event])
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # The staged copy goes (below); the store holds what it held before.
                raise StorageFull("The server's disk is full; the job was not created.") from exc
            raise
        finally:
            if staged.root.exists():
                shutil.rmtree(staged.root, ignore_errors=True)

    # -- read ------------------------------------------------------------------------------

    def get(self, name: str) -> JobRecord:
        path = self.paths(name).record
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise JobNotFound(f"No job named {name!r}.") from None
        return JobRecord.model_validate_json(data)

    def list_jobs(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        owner: str | None = None,
    ) -> JobPage:
        """Jobs newest first, `limit` at a time, after `cursor` (from a previous page).

        The index gives the candidate names; each one's record decides (a row may be a
        moment behind its record, or outlive a job deleted meanwhile)."""
        after = decode_cursor(cursor) if cursor else None
        try:
            return self._list_indexed(limit=limit, after=after, status=status, owner=owner)
        except sqlite3.DatabaseError:
            logger.exception("job index unreadable; listing by reading every record")
            return self._list_scanning(limit=limit, after=after, status=status, owner=owner)

    def _list_indexed(
        self,
        *,
        limit: int,
        after: tuple[int, str] | None,
        status: JobStatus | None,
        owner: str | None,
    ) -> JobPage:
        records: list[JobRecord] = []
        # One more than asked tells whether another page follows.
        while len(records) <= limit:
            want = limit + 1 - len(records)
            rows = self.index.page(
                limit=want, after=after, status=status.value if status else None, owner=owner
            )
            for row in rows:
                with contextlib.suppress(JobNotFound, ValidationError):
                    record = self.get(row.name)
                    if matches(record, status, owner) and time_key(record.created_at) == (
                        row.created_us
                    ):
                        records.append(record)
            if len(rows) < want:
                break
            after = (rows[-1].created_us, rows[-1].name)
        return page_of(records, limit)

    def _list_scanning(
        self,
        *,
        limit: int,
        after: tuple[int, str] | None,
        status: JobStatus | None,
        owner: str | None,
    ) -> JobPage:
        records = [
            record
            for record in self._all_records()
            if matches(record, status, owner)
            and (after is None or (time_key(record.created_at), record.name) < after)
        ]
        records.sort(key=lambda r: (time_key(r.created_at), r.name), reverse=True)
        return page_of(records[: limit + 1], limit)

    def read_events(self, name: str) -> list[Event]:
        path = self.paths(name).events
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            raise JobNotFound(f"No job named {name!r}.") from None
        events = []
        for line in lines:
            # A crash mid-append can only leave a torn *last* line; skip anything unreadable.
            with contextlib.suppress(ValidationError):
                events.append(Event.model_validate_json(line))
        return events

    # -- update ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[JobPaths]:
        """Hold the job's exclusive lock (an `flock` on its directory)."""
        paths = self.paths(name)
        try:
            fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise JobNotFound(f"No job named {name!r}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not paths.record.exists():  # deleted while we waited
                raise JobNotFound(f"No job named {name!r}.")
            yield paths
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def update(self, name: str, change: Callable[[JobRecord], list[Event] | None]) -> JobRecord:
        """Apply `change` to the job under its lock; it mutates the record in place and
        returns the events to append (or None to leave the job untouched)."""
        with self.locked(name):
            record = self.get(name)
            before = (record.status, record.fine_tuned_model)
            events = change(record)
            if events is None:
                return record
            self._write_locked(record, events)
            if (record.status, record.fine_tuned_model) != before:
                # Before the marker goes: a crash in between leaves an unfinished job's
                # row, which start-up re-reads. (A model unregistered from a finished job
                # may leave its row naming the model; readers check the record.)
                self.index.put(record)
            if not record.status.is_active:
                self.mark_inactive(name)  # ended, or paused
            elif not before[0].is_active:
                self._mark_active(name)  # resumed
            return record

    def _write_locked(self, record: JobRecord, events: list[Event]) -> None:
        paths = self.paths(record.name)
        if events:
            with open(paths.events, "ab") as fh:
                fh.write(b"".join(_event_line(e) for e in events))
                fh.flush()
                os.fsync(fh.fileno())
        self._run_write_hooks(record, events)
        write_atomic(paths.record, _record_bytes(record))

    def _run_write_hooks(self, record: JobRecord, events: list[Event]) -> None:
        for hook in self.write_hooks:
            hook(record, events)

    # -- delete ----------------------------------------------------------------------------

    def delete(self, name: str, *, allowed: Callable[[JobRecord], None]) -> None:
        """Remove a job whole; `allowed` raises to refuse (it sees the locked record)."""
        with self.locked(name) as paths:
            record = self.get(name)
            allowed(record)
            # While the directory still holds the name, no new job can take it: drop the
            # marker now, so it can never remove the marker of a job created after us.
            self.mark_inactive(name)
            # Rename so that the job vanishes at once for every reader; then clean up.
            grave = self.trash_dir / f"{name}.{uuid.uuid4().hex}"
            os.rename(paths.root, grave)
            # Only this job's row: a job created under the name since keeps its own.
            self.index.remove(name, time_key(record.created_at))
        shutil.rmtree(grave, ignore_errors=True)

    # -- active jobs -----------------------------------------------------------------------

    def _mark_active(self, name: str) -> None:
        Path(self.active_dir, name).touch()

    def mark_inactive(self, name: str) -> None:
        Path(self.active_dir, name).unlink(missing_ok=True)

    def release_marker(self, name: str) -> None:
        """Drop the marker of a job seen finished or missing, unless a job created since
        (a delete and a create may come between the look and this call) holds the name."""
        self.mark_inactive(name)
        try:
            current = self.get(name)
        except (JobNotFound, ValidationError):
            return
        if current.status.is_active:
            self._mark_active(name)

    def active_names(self) -> list[str]:
        """Names of jobs not yet finished, without reading every job in the store."""
        return sorted(os.listdir(self.active_dir))

    def rebuild_active(self) -> None:
        """Check the list index and the active markers against the records (start-up).

        Cost grows with the unfinished jobs, plus one directory listing: finished records
        never change, so only unfinished ones can disagree with their row."""
        on_disk = set(os.listdir(self.jobs_dir))
        indexed = self.index.names()
        for name in on_disk - indexed.keys():
            with contextlib.suppress(JobNotFound, ValidationError, NotADirectoryError):
                self.index.put(self.get(name))
        for name in indexed.keys() - on_disk:
            if not self.exists(name):
                self.index.remove(name, indexed[name])
        indexed_active = {row.name for row in self.index.active_rows()}
        for name in indexed_active | set(self.active_names()):
            try:
                record = self.get(name)
            except (JobNotFound, ValidationError, NotADirectoryError):
                self.release_marker(name)
                continue
            self.index.put(record)
            if not record.status.is_active:
                self.release_marker(name)
            else:
                self._mark_active(name)
                self._drop_temp_files(name)
        self._sweep(self.staging_dir)
        self._sweep(self.trash_dir)

    def _drop_temp_files(self, name: str) -> None:
        """Delete what a process killed mid-`write_atomic` left in an unfinished job's
        directory. Only unfinished jobs are written to, and every writer holds the job's
        lock while its temp file exists: under that lock, any temp file is garbage."""
        with contextlib.suppress(JobNotFound), self.locked(name) as paths:
            for leftover in paths.root.glob(".*.tmp"):
                if ATOMIC_TEMP.match(leftover.name):
                    leftover.unlink(missing_ok=True)

    def _sweep(self, directory: Path) -> None:
        # Leftovers of a crash; recent entries may belong to another worker at work.
        cutoff = time.time() - _STALE_STAGING_SECONDS
        for entry in directory.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)


def _record_bytes(record: JobRecord) -> bytes:
    return record.model_dump_json(indent=2).encode()


def _event_line(event: Event) -> bytes:
    return event.model_dump_json().encode() + b"\n"
