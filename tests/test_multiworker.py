"""A real uvicorn with several worker processes on loopback: one name, one winner, and a
job launched exactly once although every worker runs a reconciler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import API_KEY, ROOT, job_body

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "AINFINITY_HOME": str(tmp_path / "home"),
        "AINFINITY_API_KEYS": f"tester:{API_KEY}",
        "AINFINITY_RATE_LIMIT": "100000/minute",
        "AINFINITY_LOCAL_MAX_JOBS": "1",
        "AINFINITY_LOCAL_GPUS": "0",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "ainfinity.api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("uvicorn did not start")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


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
        # Two reconcilers, one launch: each state is entered exactly once.
        assert [e["status"] for e in events] == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
        assert client.get("/api/v1/jobs/contested/logs").text.count("ainfinity-done ") == 1


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
