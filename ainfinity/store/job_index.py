"""The list index: one SQLite row per job (name, created time, owner, status, executor, and
the fine-tuned model it registered, if any).

The `job.json` files stay the record of truth; this index only answers "which names come
next, newest first" without reading every record, so a page costs the same with 100 jobs
or 100,000. It is derived data:
- the store updates a row after each record write, under the job's lock;
- a missing or unreadable index file is rebuilt from the records (under a file lock, so one
  worker builds it while the others wait), and every worker re-checks it against the
  records at start-up (`sync`): names on disk but not in the index are added, rows of
  vanished jobs are dropped, and unfinished jobs' rows are re-read (a crash between a
  record write and its row update can only leave such a row behind: finished records
  never change again);
- readers re-check every row against its record, so a stale row is skipped, never shown.

SQLite (WAL mode) makes one file safe for several worker processes; `synchronous=NORMAL`
may lose the last transactions on a power cut, which the start-up check repairs.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from ainfinity.schema.job import JOB_NAME_RE, JobRecord, JobStatus

logger = logging.getLogger("ainfinity.index")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,
    owner TEXT,
    status TEXT NOT NULL,
    executor TEXT NOT NULL,
    model TEXT,
    model_us INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_us, name);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_us, name);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_us, name);
CREATE INDEX IF NOT EXISTS models_by_time ON jobs (model_us, model) WHERE model IS NOT NULL;
CREATE INDEX IF NOT EXISTS models_by_owner ON jobs (owner, model_us, model)
    WHERE model IS NOT NULL;
"""
_ACTIVE = tuple(status.value for status in JobStatus if not status.is_terminal)


def time_key(moment: datetime) -> int:
    """Microseconds since the epoch: an integer that sorts like the time it stands for."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class IndexRow:
    name: str
    created_us: int
    owner: str | None
    status: str
    executor: str
    # The job's registered fine-tuned model and when it was registered (None: no model).
    model: str | None = None
    model_us: int | None = None

    @classmethod
    def of(cls, record: JobRecord) -> IndexRow:
        registered = record.registered_model
        return cls(
            record.name, time_key(record.created_at), record.owner, record.status.value,
            record.executor, record.fine_tuned_model,
            time_key(registered.registered_at) if registered and record.fine_tuned_model else None,
        )  # fmt: skip


@dataclass(frozen=True)
class ModelRow:
    """A registered fine-tuned model: its id, its job, and when it was registered."""

    model: str
    name: str
    model_us: int


class JobIndex:
    """The SQLite file at `path`; one connection per thread, opened lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    # -- opening and rebuilding ------------------------------------------------------------

    def open(self, records: Iterable[JobRecord] | None = None) -> bool:
        """Make sure a usable index file exists; build it from `records` when it does not.

        Returns True when it was (re)built. Runs under an exclusive file lock, so with
        several workers starting at once exactly one builds and the rest find it ready."""
        with self._file_lock():
            if self._usable():
                return False
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            conn = _connect(tmp)
            try:
                _create_schema(conn)
                count = 0
                with conn:
                    for record in records or ():
                        _upsert(conn, IndexRow.of(record))
                        count += 1
            finally:
                conn.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.path)
            logger.info("job index rebuilt from %d records: %s", count, self.path)
            return True

    def _usable(self) -> bool:
        if not self.path.exists():
            return False
        try:
            conn = _connect(self.path)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute("SELECT count(*) FROM jobs WHERE created_us < 0").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            logger.warning("job index %s is unreadable (%s); rebuilding it", self.path, exc)
            return False
        return bool(version == _SCHEMA_VERSION)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
        return conn

    # -- writes ----------------------------------------------------------------------------

    def put(self, record: JobRecord) -> None:
        conn = self._conn()
        with conn:
            _upsert(conn, IndexRow.of(record))

    def remove(self, name: str, created_us: int | None = None) -> None:
        """Drop `name`'s row; with `created_us`, only if it is still that job's row (a job
        created since under the same name keeps its own)."""
        conn = self._conn()
        with conn:
            if created_us is None:
                conn.execute("DELETE FROM jobs WHERE name = ?", (name,))
            else:
                conn.execute(
                    "DELETE FROM jobs WHERE name = ? AND created_us = ?", (name, created_us)
                )

    # -- reads -----------------------------------------------------------------------------

    def page(
        self,
        *,
        limit: int,
        after: tuple[int, str] | None,
        status: str | None,
        owner: str | None,
    ) -> list[IndexRow]:
        """Up to `limit` rows newest first, strictly after the (created_us, name) `after`."""
        clauses: list[str] = []
        params: list[object] = []
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if after is not None:
            clauses.append("(created_us, name) < (?, ?)")
            params.extend(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY created_us DESC, name DESC LIMIT ?",
            (*params, limit),
        )
        return [IndexRow(*row) for row in rows]

    def model_page(
        self, *, limit: int, after: tuple[int, str] | None, owner: str | None
    ) -> list[ModelRow]:
        """Up to `limit` registered models newest first, strictly after (model_us, model)."""
        clauses = ["model IS NOT NULL"]
        params: list[object] = []
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if after is not None:
            clauses.append("(model_us, model) < (?, ?)")
            params.extend(after)
        rows = self._conn().execute(
            f"SELECT model, name, model_us FROM jobs WHERE {' AND '.join(clauses)} "
            "ORDER BY model_us DESC, model DESC LIMIT ?",
            (*params, limit),
        )
        return [ModelRow(*row) for row in rows]

    def names(self) -> dict[str, int]:
        """Every indexed name with its created_us."""
        return dict(self._conn().execute("SELECT name, created_us FROM jobs"))

    def active_rows(self) -> list[IndexRow]:
        """The rows of unfinished jobs."""
        marks = ",".join("?" * len(_ACTIVE))
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({marks})", _ACTIVE
        )
        return [IndexRow(*row) for row in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (status, executor)."""
        rows = self._conn().execute(
            "SELECT status, executor, count(*) FROM jobs GROUP BY status, executor"
        )
        return {(status, executor): count for status, executor, count in rows}


def _connect(path: Path) -> sqlite3.Connection:
    # Explicit `with conn:` transactions; a database busy with another worker's write is
    # waited for rather than failed.
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    # A file without this version (not ours, or an older layout) is rebuilt.
    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


_COLUMNS = "name, created_us, owner, status, executor, model, model_us"


def _upsert(conn: sqlite3.Connection, row: IndexRow) -> None:
    conn.execute(
        f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET created_us = excluded.created_us, "
        "owner = excluded.owner, status = excluded.status, executor = excluded.executor, "
        "model = excluded.model, model_us = excluded.model_us",
        (
            row.name, row.created_us, row.owner, row.status, row.executor, row.model,
            row.model_us,
        ),
    )  # fmt: skip


# -- pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPage:
    """A page of `list_jobs`."""

    jobs: list[JobRecord]
    next_cursor: str | None


class Listed(Protocol):
    """What a page cursor is made of (a job's or a deployment's record)."""

    name: str
    created_at: datetime


def encode_cursor(record: Listed) -> str:
    raw = f"{record.created_at.isoformat()}|{record.name}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str] | None:
    """The (created time key, name) a page ended at, or None for a cursor we did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, sep, name = raw.partition("|")
        moment = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError):
        return None
    return (time_key(moment), name) if sep and JOB_NAME_RE.match(name) else None


def matches(record: JobRecord, status: JobStatus | None, owner: str | None) -> bool:
    return (status is None or record.status == status) and (owner is None or record.owner == owner)


def page_of(records: list[JobRecord], limit: int) -> JobPage:
    page = records[:limit]
    more = len(records) > limit
    return JobPage(jobs=page, next_cursor=encode_cursor(page[-1]) if more and page else None)
