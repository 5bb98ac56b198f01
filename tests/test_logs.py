"""`GET /jobs/{name}/logs?follow=true`: a job's output as it is written, from its start or
its last N lines, ending when the job ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from ainfinity.jobs.logs import tail_offset
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
    raw = {"follow": True, "raw": True}
    with runner.stream("GET", f"/api/v1/jobs/{name}/logs", params=raw) as response:
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
    assert received.decode() == runner.get(f"/api/v1/jobs/{name}/logs", params={"raw": True}).text

    # An ended job's log follows to its end at once; tail=N starts N lines before it.
    for raw_lines in (True, False):
        params = {"tail": 3, "raw": raw_lines}
        tail = runner.get(f"/api/v1/jobs/{name}/logs", params={"follow": True, **params})
        assert tail.text == runner.get(f"/api/v1/jobs/{name}/logs", params=params).text
        assert len(tail.text.splitlines()) == 3
    # What people read: the trainer's one-line progress, without its protocol lines.
    readable = runner.get(f"/api/v1/jobs/{name}/logs").text
    assert "ainfinity-metric" not in readable
    line = r"^step \d+/\d+ \| loss [0-9.]+ \| lr [0-9.e+-]+ \| \d+ tokens/s \| ETA [0-9:]+$"
    assert re.search(line, readable, re.M), readable[-500:]


def test_follow_with_tail_on_a_queued_job(client: TestClient, settings: Settings) -> None:
    # The job stays PENDING (no runner): this test plays the run, writing its log itself.
    assert client.post("/api/v1/jobs", json=job_body(name="queued")).status_code == 202
    log = settings.home / "jobs" / "queued" / "run.log"
    log.write_bytes(b"one\ntwo\nthree\nfour\nfive")
    params = {"follow": True, "tail": 2, "raw": True}
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
    params = {"follow": True, "raw": True}
    with client.stream("GET", "/api/v1/jobs/later/logs", params=params) as response:
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


PROTOCOL_LOG = (
    b"loading the model\n"
    b'ainfinity-dataset {"rows": 4}\n'
    b"step 1/2 | loss 3.2000 | lr 1.00e-03 | 900 tokens/s | ETA 0:00:01\n"
    b'ainfinity-metric {"step": 1, "loss": 3.2}\n'
    b'(task, pid=7) ainfinity-metric {"step": 2, "loss": 2.1}\n'
    b"step 2/2 | loss 2.1000 | lr 0.00e+00 | 950 tokens/s | ETA 0:00:00\n"
    b'ainfinity-done {"train_loss": 2.65}\n'
    b"a line about ainfinity-metric that is no protocol line\n"
)
READABLE = [
    b"loading the model\n",
    b"step 1/2 | loss 3.2000 | lr 1.00e-03 | 900 tokens/s | ETA 0:00:01\n",
    b"step 2/2 | loss 2.1000 | lr 0.00e+00 | 950 tokens/s | ETA 0:00:00\n",
    b"a line about ainfinity-metric that is no protocol line\n",
]


class TestReadableLog:
    @pytest.fixture
    def queued(self, client: TestClient, settings: Settings) -> Path:
        assert client.post("/api/v1/jobs", json=job_body(name="readable")).status_code == 202
        log = settings.home / "jobs" / "readable" / "run.log"
        log.write_bytes(PROTOCOL_LOG)
        return log

    def test_protocol_lines_are_left_out_unless_raw(self, client: TestClient, queued: Path) -> None:
        url = "/api/v1/jobs/readable/logs"
        assert client.get(url).content == b"".join(READABLE)
        assert client.get(url, params={"raw": True}).content == PROTOCOL_LOG

    @pytest.mark.parametrize("lines", [0, 1, 2, 3, 4, 9])
    def test_tail_counts_the_lines_shown(
        self, client: TestClient, queued: Path, lines: int
    ) -> None:
        url = "/api/v1/jobs/readable/logs"
        shown = client.get(url, params={"tail": lines}).content
        assert shown == b"".join(READABLE[len(READABLE) - lines :] if lines else [])
        raw = client.get(url, params={"tail": lines, "raw": True}).content
        assert raw == b"".join(PROTOCOL_LOG.splitlines(keepends=True)[-lines:] if lines else [])

    def test_following_filters_lines_cut_anywhere(self, client: TestClient, queued: Path) -> None:
        queued.write_bytes(b"")
        with client.stream(
            "GET", "/api/v1/jobs/readable/logs", params={"follow": True}
        ) as response:
            chunks = response.iter_bytes()
            received = b""
            # The run writes its lines in pieces that cut them anywhere.
            for start in range(0, len(PROTOCOL_LOG), 7):
                with open(queued, "ab") as fh:
                    fh.write(PROTOCOL_LOG[start : start + 7])
            while received != b"".join(READABLE):
                received += next(chunks)
            assert client.post("/api/v1/jobs/readable/cancel").status_code == 202
            assert list(chunks) == []

    def test_a_partial_line_is_sent_while_waiting(self, client: TestClient, queued: Path) -> None:
        queued.write_bytes(b"epoch 1 of 3... ")
        with client.stream(
            "GET", "/api/v1/jobs/readable/logs", params={"follow": True}
        ) as response:
            chunks = response.iter_bytes()
            assert next(chunks) == b"epoch 1 of 3... "
            assert client.post("/api/v1/jobs/readable/cancel").status_code == 202
            assert list(chunks) == []


@pytest.mark.parametrize("lines", [1, 2, 5])
def test_tail_offset_counts_only_lines_people_read(tmp_path: Path, lines: int) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"x" * 70_000 + b"\n" + PROTOCOL_LOG)
    start = tail_offset(path, lines, raw=False)
    kept = [
        line for line in path.read_bytes()[start:].splitlines() if b"ainfinity-done" not in line
    ]
    assert len([ln for ln in kept if not ln.startswith((b"ainfinity-", b"(task"))]) == min(lines, 5)
