"""The JSON store under real concurrency: several processes, one name."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ainfinity.exceptions import JobExists
from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, JobSpec, JobStatus
from ainfinity.store.job_store import JobStore


def make_record(name: str, home: Path) -> tuple[JobRecord, Event]:
    now = datetime.now(timezone.utc)
    spec = JobSpec(name=name, executor="local", model="tiny-random-llama", dataset="/d.jsonl")
    record = JobRecord(
        name=name,
        status=JobStatus.PENDING,
        executor="local",
        spec=spec,
        created_at=now,
        updated_at=now,
        output_dir=str(home / "jobs" / name / "output"),
    )
    event = Event(
        time=now, type=EventType.CREATED, status=JobStatus.PENDING, message="m", actor="t"
    )
    return record, event


def new_store(home: Path, *names: str) -> JobStore:
    """An initialized store holding a PENDING job for each name."""
    store = JobStore(home)
    store.initialize()
    for name in names:
        record, event = make_record(name, home)
        store.create(record, event, files={})
    return store


def finish_as(status: JobStatus) -> Callable[[JobRecord], list[Event]]:
    """An update that ends a job with `status` and logs that as an event."""

    def change(job: JobRecord) -> list[Event]:
        job.status = status
        _, event = make_record(job.name, Path("/unused"))
        return [event.model_copy(update={"status": status})]

    return change


def create_once(home: str, name: str, start: multiprocessing.synchronize.Barrier) -> str:
    store = JobStore(Path(home))
    record, event = make_record(name, Path(home))
    start.wait()
    try:
        store.create(record, event, files={"task.yaml": b"name: x\n"})
    except JobExists:
        return "exists"
    return "created"


def test_one_name_from_many_processes_has_exactly_one_winner(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.initialize()
    context = multiprocessing.get_context("spawn")
    workers = 8
    with context.Manager() as manager:
        start = manager.Barrier(workers)
        with context.Pool(workers) as pool:
            results = pool.starmap(create_once, [(str(tmp_path), "contested", start)] * workers)
    assert sorted(results) == ["created"] + ["exists"] * (workers - 1)
    assert store.get("contested").status == JobStatus.PENDING
    assert len(store.read_events("contested")) == 1
    assert list(store.staging_dir.iterdir()) == []
    assert store.active_names() == ["contested"]


def test_updates_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = new_store(tmp_path, "updated")
    store.update("updated", finish_as(JobStatus.SUCCEEDED))
    assert store.get("updated").status == JobStatus.SUCCEEDED
    assert [e.status for e in store.read_events("updated")] == [
        JobStatus.PENDING,
        JobStatus.SUCCEEDED,
    ]
    assert store.active_names() == []
    assert not [p for p in (tmp_path / "jobs" / "updated").iterdir() if p.name.endswith(".tmp")]


def test_active_markers_are_rebuilt_from_the_records(tmp_path: Path) -> None:
    store = new_store(tmp_path, "one", "two")
    for marker in store.active_dir.iterdir():
        marker.unlink()
    store.rebuild_active()
    assert store.active_names() == ["one", "two"]


def test_a_corrupt_record_does_not_stall_the_others(make_settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from ainfinity.api.main import create_app
    from tests.builders import API_KEY, job_body

    settings = make_settings()
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.post("/api/v1/jobs", json=job_body(name="broken-record"))
        client.post("/api/v1/jobs", json=job_body(name="healthy"))
        (settings.home / "jobs" / "broken-record" / "job.json").write_text("{torn")
        service = client.app.state.service  # type: ignore[attr-defined]
        service.reconcile()  # must not raise
        # The healthy job is still served and can still be acted on.
        assert client.post("/api/v1/jobs/healthy/cancel").json()["status"] == "CANCELLED"


def test_a_stale_release_keeps_the_marker_of_a_recreated_job(tmp_path: Path) -> None:
    store = new_store(tmp_path, "reused")
    store.update("reused", finish_as(JobStatus.CANCELLED))
    # A reconciler read the finished record here; then the job is deleted and recreated...
    store.delete("reused", allowed=lambda job: None)
    again, event = make_record("reused", tmp_path)
    store.create(again, event, files={})
    # ...and only now does it release the marker of what it saw: the new job keeps its own.
    store.release_marker("reused")
    assert store.active_names() == ["reused"]
    store.delete("reused", allowed=lambda job: None)
    store.release_marker("reused")
    assert store.active_names() == []
