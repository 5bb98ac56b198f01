"""The SkyPilot executor over HTTP, with SkyPilot's API server replaced by a recording fake.

The fake answers with SkyPilot's own record and status types and validates each launched task
with SkyPilot's code; everything on our side (app, store, reconciler, executor) is real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.train.protocol import ERROR_PREFIX, METRIC_PREFIX, format_event
from tests.builders import API_KEY, job_body, wait_for
from tests.conftest import MakeSettings
from tests.sky_fake import FAILURE_NO_PLACE, FAILURE_USER_CODE, RecordingSkyPilot

pytestmark = pytest.mark.timeout(120)
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@pytest.fixture
def sky_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(executor="skypilot", skypilot_poll_seconds=0.05)


@pytest.fixture
def fake() -> RecordingSkyPilot:
    return RecordingSkyPilot()


@pytest.fixture
def sky_client(sky_settings: Settings, fake: RecordingSkyPilot) -> Iterator[TestClient]:
    app = create_app(sky_settings, skypilot_sdk=fake)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client


def wait_until(check: Callable[[], Any], *, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def stored(settings: Settings, name: str) -> dict[str, Any]:
    return json.loads((settings.home / "jobs" / name / "job.json").read_text())


def statuses(client: TestClient, name: str) -> list[str]:
    events = client.get(f"/api/v1/jobs/{name}/events").json()["data"]
    return [e["status"] for e in events if e["type"] in ("created", "status_changed")]


def metric_line(step: int, loss: float) -> str:
    record = {
        "step": step,
        "total_steps": 4,
        "loss": loss,
        "step_time_seconds": 2.0,
        "time": "2026-11-23T00:00:00Z",
    }
    return format_event(METRIC_PREFIX, record)


def test_walks_a_managed_job_through_recovery_to_success(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    assert sky_client.post("/api/v1/jobs", json=job_body(name="sky1")).status_code == 202

    job_id = wait_until(lambda: stored(sky_settings, "sky1")["executor_state"].get("job_id"))
    state = stored(sky_settings, "sky1")["executor_state"]
    assert state["launch_request_id"] == "req-1"
    assert fake.calls[0] == ("launch", "sky1", "req-1")
    assert wait_for(sky_client, "sky1", {"STARTING"})["status"] == "STARTING"

    fake.set_status(job_id, "RUNNING")
    fake.node_line(job_id, "setup done", setup=True)
    fake.node_line(job_id, metric_line(1, 2.5))
    fake.node_line(job_id, metric_line(2, 2.0))
    job = wait_until(
        lambda: (
            (j := sky_client.get("/api/v1/jobs/sky1").json())["progress"]
            and j["progress"]["step"] == 2
            and j
        )
    )
    assert job["status"] == "RUNNING"
    assert job["progress"]["percent"] == 50.0 and job["progress"]["eta_seconds"] == 4.0

    fake.set_status(job_id, "RECOVERING", recovery_count=1)
    assert wait_for(sky_client, "sky1", {"RECOVERING"})["recovery_count"] == 1
    fake.set_status(job_id, "RUNNING")
    wait_for(sky_client, "sky1", {"RUNNING"})
    for line in (metric_line(3, 1.5), metric_line(4, 1.0), "ainfinity-done {}"):
        fake.node_line(job_id, line)
    fake.set_status(job_id, "SUCCEEDED")
    job = wait_for(sky_client, "sky1", TERMINAL)

    assert job["status"] == "SUCCEEDED" and job["recovery_count"] == 1
    assert statuses(sky_client, "sky1") == [
        "PENDING",
        "STARTING",
        "RUNNING",
        "RECOVERING",
        "RUNNING",
        "SUCCEEDED",
    ]
    recovering = [
        e
        for e in sky_client.get("/api/v1/jobs/sky1/events").json()["data"]
        if e["status"] == "RECOVERING"
    ]
    assert "recovery 1" in recovering[0]["message"]
    # The streamed log is the job's own log, as plain text with each line's source, and its
    # metric lines are the job's metrics.
    lines = sky_client.get("/api/v1/jobs/sky1/logs", params={"raw": True}).text.splitlines()
    assert "(setup pid=812) setup done" in lines
    assert "(sky1, pid=901) ainfinity-done {}" in lines
    assert lines[-1] == "✓ Managed job finished: 1 (status: SUCCEEDED)."
    assert not any("\x1b" in line for line in lines)
    # By default the trainer's protocol lines are left out for people reading the log.
    shown = sky_client.get("/api/v1/jobs/sky1/logs").text.splitlines()
    assert "(setup pid=812) setup done" in shown
    assert not any("ainfinity-" in line for line in shown)
    metrics = sky_client.get("/api/v1/jobs/sky1/metrics").json()["data"]
    assert [(m["step"], m["loss"]) for m in metrics] == [(1, 2.5), (2, 2.0), (3, 1.5), (4, 1.0)]
    assert job["progress"]["step"] == 4 and job["progress"]["percent"] == 100.0


def test_polls_the_queue_once_for_all_active_jobs(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    for name in ("batch-a", "batch-b", "batch-c"):
        assert sky_client.post("/api/v1/jobs", json=job_body(name=name)).status_code == 202
    for name in ("batch-a", "batch-b", "batch-c"):
        wait_until(lambda n=name: stored(sky_settings, n)["executor_state"].get("job_id"))
    fake.calls.clear()

    wait_until(lambda: any(len(call) == 3 for call in fake.queue_calls()))

    # Once all three have ids, each poll is one call carrying every id.
    assert all(len(call) == 3 for call in fake.queue_calls()[-3:])


def test_no_resource_fails_with_skypilots_reason_in_plain_words(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    sky_client.post("/api/v1/jobs", json=job_body(name="nores"))
    job_id = wait_until(lambda: stored(sky_settings, "nores")["executor_state"].get("job_id"))

    fake.set_status(job_id, "FAILED_PRECHECKS", failure_reason=FAILURE_NO_PLACE)
    job = wait_for(sky_client, "nores", TERMINAL)

    assert job["status"] == "FAILED"
    # SkyPilot's reason, read from the record (asked for: queue_v2 leaves it out by
    # default), as one plain line: no colour codes, class tag or `sky` hints.
    assert job["failure_reason"] == (
        "prechecks_failed: SkyPilot refused the task before launching it (resources or file "
        "mounts); SkyPilot says: Catalog does not contain any instances satisfying the "
        "request: 1x Slurm({'H100': 1}). To fix: relax or change the resource requirements."
    )


def test_the_trainers_own_error_wins_over_skypilots_generic_failure(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    sky_client.post("/api/v1/jobs", json=job_body(name="oom"))
    job_id = wait_until(lambda: stored(sky_settings, "oom")["executor_state"].get("job_id"))
    fake.set_status(job_id, "RUNNING")
    error = format_event(ERROR_PREFIX, {"code": "cuda_oom", "msg": "out of memory"})
    fake.node_line(job_id, error)
    fake.set_status(job_id, "FAILED", failure_reason=FAILURE_USER_CODE)

    job = wait_for(sky_client, "oom", TERMINAL)

    assert job["failure_reason"] == "cuda_oom: out of memory"
    assert f"(oom, pid=901) {error}" in job["failure_log"]


def test_cancel_reaches_skypilot_and_ends_cancelled(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    sky_client.post("/api/v1/jobs", json=job_body(name="stopme"))
    job_id = wait_until(lambda: stored(sky_settings, "stopme")["executor_state"].get("job_id"))
    fake.set_status(job_id, "RUNNING")
    wait_for(sky_client, "stopme", {"RUNNING"})

    response = sky_client.post("/api/v1/jobs/stopme/cancel")

    assert response.status_code == 202 and response.json()["status"] == "CANCELLING"
    wait_until(lambda: ("cancel", (job_id,)) in fake.calls)
    fake.set_status(job_id, "CANCELLED")
    assert wait_for(sky_client, "stopme", TERMINAL)["status"] == "CANCELLED"
    assert statuses(sky_client, "stopme")[-2:] == ["CANCELLING", "CANCELLED"]


def test_a_cancel_before_skypilot_answered_the_launch_is_sent_when_it_does(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    fake.launch_gate.clear()
    sky_client.post("/api/v1/jobs", json=job_body(name="early"))
    wait_until(lambda: stored(sky_settings, "early")["executor_state"].get("launch_request_id"))

    assert sky_client.post("/api/v1/jobs/early/cancel").json()["status"] == "CANCELLING"
    fake.launch_gate.set()

    job_id = wait_until(lambda: stored(sky_settings, "early")["executor_state"].get("job_id"))
    wait_until(lambda: ("cancel", (job_id,)) in fake.calls)
    fake.set_status(job_id, "CANCELLED")
    assert wait_for(sky_client, "early", TERMINAL)["status"] == "CANCELLED"


def test_a_restart_resumes_tracking_from_what_was_stored(
    sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    # Restart 1 falls between the launch request and its answer; restart 2 while it runs.
    fake.launch_gate.clear()
    with TestClient(
        create_app(sky_settings, skypilot_sdk=fake), headers={"X-API-Key": API_KEY}
    ) as c:
        c.post("/api/v1/jobs", json=job_body(name="survivor"))
        wait_until(
            lambda: stored(sky_settings, "survivor")["executor_state"].get("launch_request_id")
        )
    assert "job_id" not in stored(sky_settings, "survivor")["executor_state"]

    fake.launch_gate.set()
    with TestClient(
        create_app(sky_settings, skypilot_sdk=fake), headers={"X-API-Key": API_KEY}
    ) as c:
        job_id = wait_until(
            lambda: stored(sky_settings, "survivor")["executor_state"].get("job_id")
        )
        fake.set_status(job_id, "RUNNING")
        wait_for(c, "survivor", {"RUNNING"})
    launches = [call for call in fake.calls if call[0] == "launch"]
    assert len(launches) == 1  # the stored request was waited on again, not relaunched

    fake.node_line(job_id, metric_line(4, 0.5))
    fake.set_status(job_id, "SUCCEEDED")
    with TestClient(
        create_app(sky_settings, skypilot_sdk=fake), headers={"X-API-Key": API_KEY}
    ) as c:
        job = wait_for(c, "survivor", TERMINAL)
        assert job["status"] == "SUCCEEDED"
        # The restarted server read the whole log again into its own copy.
        assert c.get("/api/v1/jobs/survivor/metrics").json()["data"][-1]["step"] == 4
    assert len([call for call in fake.calls if call[0] == "launch"]) == 1


def test_launch_refused_by_skypilot_fails_the_job_in_plain_words(
    sky_client: TestClient, sky_settings: Settings, fake: RecordingSkyPilot
) -> None:
    class NoCloudAccessError(RuntimeError):
        pass

    fake.launch_error = NoCloudAccessError("No cloud access available for launching.")
    sky_client.post("/api/v1/jobs", json=job_body(name="nocloud"))

    job = wait_for(sky_client, "nocloud", TERMINAL)

    assert job["status"] == "FAILED"
    assert job["failure_reason"].startswith("launch_error: no cloud is enabled in SkyPilot")


def test_the_real_sdk_without_an_api_server_fails_the_job_cleanly(
    make_settings: MakeSettings,
) -> None:
    # SkyPilot's real client; conftest sets SKYPILOT_DISABLE_LOCAL_API_SERVER=1, so nothing
    # is started and nothing leaves this machine.
    settings = make_settings(executor="skypilot", skypilot_poll_seconds=0.05)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.post("/api/v1/jobs", json=job_body(name="real")).status_code == 202
        job = wait_for(client, "real", TERMINAL, timeout=60)

    assert job["status"] == "FAILED"
    assert "SkyPilot API server" in job["failure_reason"], job["failure_reason"]
    assert "Traceback" not in job["failure_reason"]


def test_a_configured_api_server_that_is_down_fails_the_job_naming_it(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    # Registered so the variable the client sets is restored after this test.
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", "unset-by-test")
    settings = make_settings(executor="skypilot", skypilot_api_server=endpoint)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.post("/api/v1/jobs", json=job_body(name="down"))
        job = wait_for(client, "down", TERMINAL, timeout=60)

    assert job["status"] == "FAILED"
    assert job["failure_reason"].startswith(
        "launch_error: the SkyPilot API server cannot be reached"
    )
    assert endpoint in job["failure_reason"]
