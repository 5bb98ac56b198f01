"""Server-Sent Event streams: a real run's status, progress and metric messages as they
happen, replay and `Last-Event-ID` resumption, and who sees what."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from tests.builders import job_body
from tests.conftest import MakeSettings
from tests.sse import Message, read_all, read_until

pytestmark = pytest.mark.timeout(240)

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef00"
OPS = "ops-key-0123456789abcdef00"
ROLE_KEYS = f"alice:{ALICE}:user,bob:{BOB}:user,ops:{OPS}:admin"


def ids(messages: list[Message]) -> list[int]:
    return [int(m.id) for m in messages if m.id is not None]


def of_kind(messages: list[Message], kind: str) -> list[Any]:
    return [m.json for m in messages if m.event == kind]


def stream(client: TestClient, path: str, last_id: str | None = None) -> Any:
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    return client.stream("GET", path, headers=headers)


def test_a_running_job_streams_live_then_replays_and_resumes(runner: TestClient) -> None:
    name = "streamed"
    body = job_body(
        name=name,
        hyperparameters={"max_steps": 1_000_000, "logging_steps": 1, "max_seq_length": 64},
    )
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    path = f"/api/v1/jobs/{name}/events/stream"

    with stream(runner, path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        # The run never ends by itself: metric and progress messages can only be live.
        live = read_until(
            lines,
            lambda got: len(of_kind(got, "metric")) >= 3 and bool(of_kind(got, "progress")),
            timeout=150,
        )
        assert runner.get(f"/api/v1/jobs/{name}").json()["status"] == "RUNNING"
        assert runner.post(f"/api/v1/jobs/{name}/cancel").status_code == 202
        # The stream ends by itself once the job has ended.
        messages = live + read_all(lines)

    job = runner.get(f"/api/v1/jobs/{name}").json()
    assert job["status"] == "CANCELLED"
    assert all(m.event in ("status", "progress", "metric") for m in messages)
    assert all(m.json["job"] == name for m in messages)
    assert ids(messages) == sorted(set(ids(messages)))  # strictly increasing, one each
    assert len(ids(messages)) == len(messages)

    # status: every event, as GET /events lists them; the terminal one comes last.
    events = runner.get(f"/api/v1/jobs/{name}/events").json()["data"]
    assert [s["event"] for s in of_kind(messages, "status")] == events
    assert [e["status"] for e in events if e["type"] == "status_changed"] == [
        "STARTING",
        "RUNNING",
        "CANCELLING",
        "CANCELLED",
    ]
    assert messages[-1].event == "status" and messages[-1].json["event"]["status"] == "CANCELLED"
    # metric: each record the run wrote, as GET /metrics has them.
    metrics = runner.get(f"/api/v1/jobs/{name}/metrics").json()["data"]
    assert [m["metric"] for m in of_kind(messages, "metric")] == metrics
    # progress: changes only, the last one the job's own.
    progress = of_kind(messages, "progress")
    assert progress[-1]["progress"] == job["progress"]
    steps = [p["progress"]["step"] for p in progress]
    assert steps == sorted(set(steps))

    # Reconnecting without an id replays the whole job, identically, and ends.
    with stream(runner, path) as response:
        replay = read_all(response.iter_lines())
    assert replay == messages

    # With Last-Event-ID: exactly what came after it, nothing twice, no gap.
    for cut in (0, len(messages) // 2, len(messages) - 2, len(messages) - 1):
        assert messages[cut].id is not None
        with stream(runner, path, last_id=messages[cut].id) as response:
            assert read_all(response.iter_lines()) == messages[cut + 1 :]


def test_the_global_stream_shows_a_user_its_own_jobs_only(make_settings: MakeSettings) -> None:
    settings = make_settings(api_keys=SecretStr(ROLE_KEYS), stream_ping_seconds=0.3)
    alice, bob, ops = ({"X-API-Key": key} for key in (ALICE, BOB, OPS))
    with TestClient(create_app(settings)) as client:
        # Without Last-Event-ID the stream starts now, with a bare id to resume from.
        with client.stream("GET", "/api/v1/events/stream", headers=alice) as response:
            [start] = read_until(response.iter_lines(), lambda got: len(got) == 1)
        assert start.event is None and start.data is None and start.id is not None

        for who, name in ((alice, "alices"), (bob, "bobs")):
            assert (
                client.post("/api/v1/jobs", json=job_body(name=name), headers=who).status_code
                == 202
            )
        assert client.post("/api/v1/jobs/bobs/cancel", headers=bob).status_code == 202
        assert client.post("/api/v1/jobs/alices/cancel", headers=alice).status_code == 202

        def until_alices_end(got: list[Message]) -> bool:
            last = got[-1].json
            return bool(last["job"] == "alices" and last["event"]["status"] == "CANCELLED")

        seen: dict[str, list[Message]] = {}
        for reader, key in (("alice", alice), ("ops", ops)):
            headers = {**key, "Last-Event-ID": start.id}
            with client.stream("GET", "/api/v1/events/stream", headers=headers) as response:
                seen[reader] = read_until(response.iter_lines(), until_alices_end)

    assert [(m.json["job"], m.json["event"]["type"]) for m in seen["alice"]] == [
        ("alices", "created"),
        ("alices", "cancel_requested"),
        ("alices", "status_changed"),
    ]
    # The admin sees both jobs, in the order things happened, under the same ids.
    assert [m.json["job"] for m in seen["ops"]] == [
        "alices",
        "bobs",
        "bobs",
        "bobs",
        "alices",
        "alices",
    ]
    assert [m for m in seen["ops"] if m.json["job"] == "alices"] == seen["alice"]


def test_streams_answer_errors_as_json_before_streaming(make_settings: MakeSettings) -> None:
    settings = make_settings(api_keys=SecretStr(ROLE_KEYS))
    with TestClient(create_app(settings)) as client:
        as_alice, as_bob = {"X-API-Key": ALICE}, {"X-API-Key": BOB}
        created = client.post("/api/v1/jobs", json=job_body(name="mine"), headers=as_alice)
        assert created.status_code == 202
        for path in (
            "/api/v1/jobs/nobody/events/stream",
            "/api/v1/jobs/nobody/logs?follow=true",
        ):
            response = client.get(path, headers=as_alice)
            assert response.status_code == 404
            assert response.json()["detail"]["code"] == "job_not_found"
        # Another user's job does not exist for bob.
        for path in ("/api/v1/jobs/mine/events/stream", "/api/v1/jobs/mine/logs?follow=true"):
            response = client.get(path, headers=as_bob)
            assert response.status_code == 404, path
            assert response.json()["detail"]["code"] == "job_not_found"
        assert client.get("/api/v1/events/stream").status_code == 401
        bad = client.get("/api/v1/events/stream", headers={**as_alice, "Last-Event-ID": "x"})
        assert bad.status_code == 422
        assert bad.json()["detail"]["code"] == "validation_error"


def test_an_id_from_elsewhere_or_mid_line_is_handled(client: TestClient) -> None:
    assert client.post("/api/v1/jobs", json=job_body(name="lone")).status_code == 202
    assert client.post("/api/v1/jobs/lone/cancel").status_code == 202
    path = "/api/v1/jobs/lone/events/stream"
    with stream(client, path) as response:
        full = read_all(response.iter_lines())
    assert [m.json["event"]["type"] for m in full] == [
        "created",
        "cancel_requested",
        "status_changed",
    ]
    first = int(full[0].id or 0)
    # An id beyond the journal's end is not one of ours: the whole job again.
    with stream(client, path, last_id=str(10**15)) as response:
        assert read_all(response.iter_lines()) == full
    # An id inside a line resumes at the next whole line.
    with stream(client, path, last_id=str(first - 5)) as response:
        assert read_all(response.iter_lines()) == full[1:]
    with stream(client, path, last_id=str(first + 3)) as response:
        assert read_all(response.iter_lines()) == full[2:]
