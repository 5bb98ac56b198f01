"""Concurrent launches against a real `uvicorn --workers 4`: none lost, none doubled.

Jobs stay PENDING (`AINFINITY_LOCAL_MAX_JOBS=0`): what is under test is the store and the
API across worker processes, not training.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import job_body
from tests.servers import UvicornServer
from tests.store_checks import check_home, list_all

pytestmark = pytest.mark.timeout(180)

WORKERS = 4
JOBS = 200
IN_FLIGHT = 48


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UvicornServer]:
    with UvicornServer(tmp_path / "home", workers=WORKERS) as running:
        yield running


def test_200_concurrent_launches_are_all_recorded_whole(server: UvicornServer) -> None:
    names = [f"load-{i:03d}" for i in range(JOBS)]
    most_in_flight = 0
    in_flight = 0
    lock = threading.Lock()

    with server.client(limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:

        def launch(name: str) -> httpx.Response:
            nonlocal in_flight, most_in_flight
            with lock:
                in_flight += 1
                most_in_flight = max(most_in_flight, in_flight)
            try:
                return client.post("/api/v1/jobs", json=job_body(name=name))
            finally:
                with lock:
                    in_flight -= 1

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            responses = list(pool.map(launch, names))
        elapsed = time.monotonic() - started

        assert Counter(r.status_code for r in responses) == {202: JOBS}, [
            r.text for r in responses if r.status_code != 202
        ][:3]
        assert [r.json()["name"] for r in responses] == names
        assert most_in_flight > WORKERS  # the requests really overlapped
        served = server.served_by("/api/v1/jobs", method="POST")
        assert sum(served.values()) == JOBS and len(served) >= 2, served

        listed = list_all(client)
        assert sorted(job["name"] for job in listed) == names
        assert {job["status"] for job in listed} == {"PENDING"}
        # Another page size, the same jobs: pages neither skip nor repeat at the seams.
        assert [job["name"] for job in list_all(client, limit=100)] == [
            job["name"] for job in listed
        ]
        assert len(list_all(client, status="PENDING")) == JOBS

    report = check_home(server.home)
    assert sorted(report.jobs) == names
    assert all(len(events) == 1 for events in report.events.values())
    assert report.staged == []
    assert sorted(p.name for p in (server.home / "active").iterdir()) == names
    print(f"\n{JOBS} launches, {most_in_flight} in flight: {elapsed:.1f} s; by worker {served}")


def test_one_name_posted_50_times_at_once_makes_one_job(server: UvicornServer) -> None:
    body = job_body(name="contested")
    attempts = 50
    start = threading.Barrier(attempts)

    def post(_: int) -> httpx.Response:
        # A connection each, opened before the barrier: the posts race across workers.
        with server.client() as client:
            client.get("/health")
            start.wait(timeout=30)
            return client.post("/api/v1/jobs", json=body)

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        responses = list(pool.map(post, range(attempts)))

    codes = Counter(r.status_code for r in responses)
    assert codes == {202: 1, 409: attempts - 1}, codes
    conflicts = [r.json()["detail"] for r in responses if r.status_code == 409]
    assert {detail["code"] for detail in conflicts} == {"job_exists"}
    [winner] = [r.json() for r in responses if r.status_code == 202]
    served = server.served_by("/api/v1/jobs", method="POST")
    assert sum(served.values()) == attempts and len(served) >= 2, served

    with server.client() as client:
        assert client.get("/api/v1/jobs/contested").json() == winner
        assert [job["name"] for job in list_all(client)] == ["contested"]
    report = check_home(server.home)
    assert list(report.jobs) == ["contested"]
    assert len(report.events["contested"]) == 1  # one created event: one creator acted
    assert report.staged == []  # the losers' staged copies are gone
