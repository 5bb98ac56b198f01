"""The list index: pages match a full scan of the records, and a lost, corrupt or stale
index is put right from the records."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_files import write_atomic
from ainfinity.store.job_index import JobPage
from ainfinity.store.job_store import JobStore
from tests.test_store import finish_as, make_record

OWNERS = ("alice", "bob", None)
STATUSES = (JobStatus.PENDING, JobStatus.SUCCEEDED, JobStatus.FAILED)


def seeded_store(home: Path, count: int) -> JobStore:
    """`count` jobs with shuffled creation times (some equal), owners and statuses."""
    store = JobStore(home)
    store.initialize()
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        record, event = make_record(f"job-{i:03d}", home)
        # Whole seconds now and then: isoformat drops the fraction, which must not change
        # the order.
        offset = timedelta(seconds=rng.randrange(40), microseconds=rng.choice([0, 0, 250, 999]))
        record.created_at = base + offset
        record.owner = rng.choice(OWNERS)
        store.create(record, event, files={})
        status = rng.choice(STATUSES)
        if status is not JobStatus.PENDING:
            store.update(record.name, finish_as(status))
    return store


def walk(store: JobStore, *, limit: int, **filters: object) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page: JobPage = store.list_jobs(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        names += [record.name for record in page.jobs]
        assert len(page.jobs) <= limit
        if page.next_cursor is None:
            return names
        cursor = page.next_cursor


def truth(home: Path, **filters: object) -> list[str]:
    """Newest first by reading every job.json: what the index must agree with."""
    records = [
        JobRecord.model_validate_json(path.read_bytes())
        for path in (home / "jobs").glob("*/job.json")
    ]
    keep = [
        r
        for r in records
        if filters.get("status") in (None, r.status) and filters.get("owner") in (None, r.owner)
    ]
    keep.sort(key=lambda r: (r.created_at, r.name), reverse=True)
    return [r.name for r in keep]


FILTERS = [
    {},
    {"owner": "alice"},
    {"status": JobStatus.SUCCEEDED},
    {"owner": "bob", "status": JobStatus.PENDING},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(map(str, f.values())) or "all")
@pytest.mark.parametrize("limit", [1, 7, 100])
def test_pages_match_a_full_scan(tmp_path: Path, filters: dict[str, object], limit: int) -> None:
    store = seeded_store(tmp_path, 60)
    expected = truth(tmp_path, **filters)
    assert expected, "the seed must give every filter something to find"
    assert walk(store, limit=limit, **filters) == expected


def test_a_lost_index_is_rebuilt_from_the_records(tmp_path: Path) -> None:
    seeded_store(tmp_path, 30)
    (tmp_path / "index.sqlite3").unlink()
    store = JobStore(tmp_path)
    store.initialize()
    assert walk(store, limit=8) == truth(tmp_path)
    assert walk(store, limit=8, status=JobStatus.FAILED) == truth(tmp_path, status=JobStatus.FAILED)


def test_a_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    seeded_store(tmp_path, 20)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path}/index.sqlite3{suffix}").unlink(missing_ok=True)
    (tmp_path / "index.sqlite3").write_bytes(b"not a database at all" * 100)
    store = JobStore(tmp_path)
    store.initialize()
    assert walk(store, limit=5) == truth(tmp_path)


def test_startup_repairs_what_a_crash_can_leave(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, 10)
    # A job renamed into place by a process that died before its row was written.
    orphan, event = make_record("orphan", tmp_path)
    store.create(orphan, event, files={})
    store.index.remove("orphan")
    # A record updated by a process that died before its row was: PENDING on the index.
    pending = truth(tmp_path, status=JobStatus.PENDING)[0]
    record = store.get(pending)
    record.status = JobStatus.RUNNING
    write_atomic(store.paths(pending).record, record.model_dump_json().encode())
    # A row whose job is gone.
    ghost, _ = make_record("ghost", tmp_path)
    store.index.put(ghost)

    restarted = JobStore(tmp_path)
    restarted.initialize()
    restarted.rebuild_active()
    assert set(restarted.index.names()) == {p.parent.name for p in tmp_path.glob("jobs/*/job.json")}
    assert walk(restarted, limit=3) == truth(tmp_path)
    assert walk(restarted, limit=3, status=JobStatus.RUNNING) == [pending]
    assert pending in restarted.active_names() and "orphan" in restarted.active_names()


def test_stale_rows_are_skipped_and_the_page_still_fills(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, 12)
    newest = truth(tmp_path)[:4]
    # Records gone behind the index's back (e.g. a delete by a process that then died).
    for name in newest:
        (tmp_path / "jobs" / name / "job.json").unlink()
    page = store.list_jobs(limit=5)
    assert [r.name for r in page.jobs] == truth(tmp_path)[:5]
    assert page.next_cursor is not None


def test_delete_and_status_changes_keep_the_index_exact(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, 15)
    victim = truth(tmp_path, status=JobStatus.SUCCEEDED)[0]
    store.delete(victim, allowed=lambda record: None)
    assert victim not in store.index.names()
    survivor = truth(tmp_path, status=JobStatus.PENDING)[0]
    store.update(survivor, finish_as(JobStatus.CANCELLED))
    assert walk(store, limit=4, status=JobStatus.CANCELLED) == [survivor]
    assert walk(store, limit=4) == truth(tmp_path)
    counts = store.index.counts()
    assert sum(counts.values()) == 14
    assert counts[(JobStatus.CANCELLED.value, "local")] == 1


def create_many(
    home: str, prefix: str, count: int, start: multiprocessing.synchronize.Barrier
) -> None:
    store = JobStore(Path(home))
    store.initialize()
    start.wait()
    for i in range(count):
        record, event = make_record(f"{prefix}-{i}", Path(home))
        store.create(record, event, files={})


def test_processes_writing_at_once_all_land_in_the_index(tmp_path: Path) -> None:
    JobStore(tmp_path).initialize()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    workers = [
        context.Process(target=create_many, args=(str(tmp_path), f"p{n}", 40, start))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    store = JobStore(tmp_path)
    store.initialize()
    listed = walk(store, limit=50)
    assert len(listed) == 160
    assert listed == truth(tmp_path)


def test_an_index_broken_while_serving_falls_back_to_reading_the_records(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, 9)
    conn = sqlite3.connect(tmp_path / "index.sqlite3")
    conn.execute("DROP TABLE jobs")
    conn.commit()
    conn.close()
    assert walk(store, limit=4) == truth(tmp_path)
    assert walk(store, limit=4, owner="alice") == truth(tmp_path, owner="alice")


def test_startup_drops_temp_files_of_writes_cut_short(tmp_path: Path) -> None:
    store = seeded_store(tmp_path, 6)
    active = truth(tmp_path, status=JobStatus.PENDING)[0]
    root = tmp_path / "jobs" / active
    cut_short = root / ".job.json.0123456789abcdef0123456789abcdef.tmp"
    cut_short.write_text('{"name": "half')
    runner_file = root / ".exit.json.tmp"  # the job runner's own, which may be live
    runner_file.write_text("{}")
    store.rebuild_active()
    assert not cut_short.exists() and runner_file.exists()
