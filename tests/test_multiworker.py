"""A real uvicorn with several worker processes on loopback: one name, one winner, and a
job launched exactly once although every worker runs a reconciler."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import API_KEY, job_body
from tests.servers import UvicornServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    # Room for one running job: the contested job must really be launched (once).
    env = {"AINFINITY_LOCAL_MAX_JOBS": "1"}
    with UvicornServer(tmp_path / "home", workers=2, env=env) as running:
        yield running.url


def test_one_name_many_workers_one_job_one_launch(server: str) -> None:
    body = job_body(name="contested")

    def post(_: int) -> int:
        response = httpx.post(
            f"{server}/api/v1/jobs", json=body, headers={"X-API-Key": API_KEY}, timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = Counter(pool.map(post, range(32)))
    assert codes == {202: 1, 409: 31}

    with httpx.Client(base_url=server, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = client.get("/api/v1/jobs/contested").json()
            if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.3)
        assert job["status"] == "SUCCEEDED", client.get("/api/v1/jobs/contested/logs").text
        events = client.get("/api/v1/jobs/contested/events").json()["data"]
        # Two reconcilers, one launch: each state is entered exactly once, and one model
        # registered.
        assert [(e["type"], e["status"]) for e in events] == [
            ("created", "PENDING"),
            ("status_changed", "STARTING"),
            ("status_changed", "RUNNING"),
            ("status_changed", "SUCCEEDED"),
            ("model_registered", "SUCCEEDED"),
        ]
        assert client.get("/api/v1/jobs/contested/logs?raw=true").text.count("ainfinity-done ") == 1


def test_one_idempotency_key_across_workers_makes_one_job(server: str) -> None:
    body = job_body()  # no name: every acting request would make a job of its own

    def post(_: int) -> tuple[int, str]:
        response = httpx.post(
            f"{server}/api/v1/jobs",
            json=body,
            headers={"X-API-Key": API_KEY, "Idempotency-Key": "pipeline-42"},
            timeout=60,
        )
        return response.status_code, response.json()["name"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = Counter(pool.map(post, range(32)))

    [(status, name)] = answers
    assert status == 202
    listed = httpx.get(f"{server}/api/v1/jobs", headers={"X-API-Key": API_KEY}, timeout=30)
    assert [job["name"] for job in listed.json()["data"]] == [name]
