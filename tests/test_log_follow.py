"""`GET /jobs/{name}/logs?follow=true`: a job's output as it is written, from its start or
its last N lines, ending when the job ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from ainfinity.jobs.log_follow import tail_offset
from ainfinity.jobs.run_output import tail_bytes
from tests.builders import job_body

pytestmark = pytest.mark.timeout(240)


def test_follow_streams_a_real_run_as_it_writes_and_ends_with_it(runner: TestClient) -> None:
    name = "followed"
    body = job_body(
        name=name,
        hyperparameters={"max_steps": 1_000_000, "logging_steps": 1, "max_seq_length": 64},
    )
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    received = b""
    with runner.stream("GET", f"/api/v1/jobs/{name}/logs", params={"follow": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        chunks = response.iter_bytes()
        # The run never ends by itself: these metric lines can only have come live.
        for chunk in chunks:
            received += chunk
            if received.count(b"\nainfinity-metric ") >= 3:
                break
        assert runner.get(f"/api/v1/jobs/{name}").json()["status"] == "RUNNING"
        assert runner.post(f"/api/v1/jobs/{name}/cancel").status_code == 202
        for chunk in chunks:  # until the server ends the response
            received += chunk

    assert runner.get(f"/api/v1/jobs/{name}").json()["status"] == "CANCELLED"
    # Everything the run wrote, once, in order.
    assert received.decode() == runner.get(f"/api/v1/jobs/{name}/logs").text

    # An ended job's log follows to its end at once; tail=N starts N lines before it.
    tail = runner.get(f"/api/v1/jobs/{name}/logs", params={"follow": True, "tail": 3})
    assert tail.text == runner.get(f"/api/v1/jobs/{name}/logs", params={"tail": 3}).text
    assert len(tail.text.splitlines()) == 3


def test_follow_with_tail_on_a_queued_job(client: TestClient, settings: Settings) -> None:
    # The job stays PENDING (no runner): this test plays the run, writing its log itself.
    assert client.post("/api/v1/jobs", json=job_body(name="queued")).status_code == 202
    log = settings.home / "jobs" / "queued" / "run.log"
    log.write_bytes(b"one\ntwo\nthree\nfour\nfive")
    params = {"follow": True, "tail": 2}
    with client.stream("GET", "/api/v1/jobs/queued/logs", params=params) as response:
        chunks = response.iter_bytes()
        assert next(chunks) == b"four\nfive"
        with open(log, "ab") as fh:
            fh.write(b" and a half\nsix\n")
        assert next(chunks) == b" and a half\nsix\n"
        assert client.post("/api/v1/jobs/queued/cancel").status_code == 202
        # CANCELLED: the response ends, with nothing more to send.
        assert list(chunks) == []


def test_follow_waits_for_a_log_that_does_not_exist_yet(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/api/v1/jobs", json=job_body(name="later")).status_code == 202
    log = settings.home / "jobs" / "later" / "run.log"
    assert not log.exists()
    with client.stream("GET", "/api/v1/jobs/later/logs", params={"follow": True}) as response:
        chunks = response.iter_bytes()
        log.write_bytes(b"hello\n")
        assert next(chunks) == b"hello\n"
        assert client.post("/api/v1/jobs/later/cancel").status_code == 202
        assert list(chunks) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"a", b"a\n", b"a\nb", b"a\nb\n", b"a\n\nb\n\n", b"x" * 70_000 + b"\ny\n"],
)
@pytest.mark.parametrize("lines", [0, 1, 2, 3, 10])
def test_tail_offset_agrees_with_tail(tmp_path: Path, content: bytes, lines: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    assert content[tail_offset(path, lines) :] == tail_bytes(path, lines)


def test_tail_offset_of_a_missing_file(tmp_path: Path) -> None:
    assert tail_offset(tmp_path / "missing", 5) == 0
