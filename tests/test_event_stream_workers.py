"""Event streams on a real uvicorn with two workers: `Last-Event-ID` resumes on whichever
worker takes the connection, and after a restart; SIGTERM ends open streams promptly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.builders import job_body
from tests.servers import UvicornServer
from tests.sse import Message, read_until

pytestmark = pytest.mark.timeout(240)

STREAM = "/api/v1/events/stream"


def read_from(api: httpx.Client, last_id: str | None, count: int) -> list[Message]:
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    with api.stream("GET", STREAM, headers=headers) as response:
        assert response.status_code == 200
        return read_until(response.iter_lines(), lambda got: len(got) == count, timeout=30)


def summary(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.json["job"], m.json["event"]["type"]) for m in messages]


def test_resume_across_workers_and_restarts_and_a_prompt_shutdown(tmp_path: Path) -> None:
    env = {"AINFINITY_STREAM_PING_SECONDS": "0.5", "AINFINITY_RECONCILE_INTERVAL_SECONDS": "0.2"}
    server = UvicornServer(tmp_path / "home", workers=2, env=env)
    server.start()
    try:
        with server.client() as api:
            [start] = read_from(api, None, 1)
            assert start.data is None and start.id is not None
            names = [f"job-{i}" for i in range(4)]
            for name in names:
                assert api.post("/api/v1/jobs", json=job_body(name=name)).status_code == 202
                assert api.post(f"/api/v1/jobs/{name}/cancel").status_code == 202

            # One message per connection, each resuming after the last one received.
            pieces: list[Message] = []
            last: str | None = start.id
            while len(pieces) < 3 * len(names):
                [message] = read_from(api, last, 1)
                pieces.append(message)
                last = message.id
            whole = read_from(api, start.id, 3 * len(names))
            assert pieces == whole
            ids = [int(m.id or 0) for m in whole]
            assert ids == sorted(set(ids)) and ids[0] > int(start.id)
            assert summary(whole) == [
                (name, kind)
                for name in names
                for kind in ("created", "cancel_requested", "status_changed")
            ]
            # Both workers answered some of those connections, with the same ids.
            assert len(server.served_by(STREAM)) == 2, server.served_by(STREAM)

            # Streams that would never end by themselves: the whole feed and the log of a
            # job that stays queued.
            assert api.post("/api/v1/jobs", json=job_body(name="queued")).status_code == 202
            opened = threading.Barrier(3)
            ended: list[str] = []

            def hold(path: str) -> None:
                with server.client(timeout=60) as own, own.stream("GET", path) as response:
                    assert response.status_code == 200
                    opened.wait()
                    try:
                        for _ in response.iter_bytes():
                            pass
                        ended.append(path)
                    except httpx.HTTPError as exc:
                        ended.append(f"{path}: {exc!r}")

            threads = [
                threading.Thread(target=hold, args=(path,), daemon=True)
                for path in (STREAM, "/api/v1/jobs/queued/logs?follow=true")
            ]
            for thread in threads:
                thread.start()
            opened.wait(timeout=30)
            assert server.process is not None
            began = time.monotonic()
            server.process.terminate()
            server.process.wait(timeout=20)
            took = time.monotonic() - began
            assert took < 10, f"shutdown took {took:.1f} s with streams open"
            for thread in threads:
                thread.join(timeout=10)
            # Each response was ended by the server, not cut off.
            assert sorted(ended) == sorted([STREAM, "/api/v1/jobs/queued/logs?follow=true"])
            server.kill()

        # A new server on the same home: the same ids go on.
        server.start()
        with server.client() as api:
            assert api.post("/api/v1/jobs/queued/cancel").status_code == 202
            assert api.post("/api/v1/jobs", json=job_body(name="after")).status_code == 202
            assert api.post("/api/v1/jobs/after/cancel").status_code == 202
            resumed = read_from(api, last, 6)
        assert summary(resumed) == [
            ("queued", "created"),
            ("queued", "cancel_requested"),
            ("queued", "status_changed"),
            ("after", "created"),
            ("after", "cancel_requested"),
            ("after", "status_changed"),
        ]
        assert int(resumed[0].id or 0) > int(last or 0)
    finally:
        server.stop()
