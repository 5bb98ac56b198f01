"""Pause and resume: a running job saves a complete checkpoint at its next step's end and
stops (PAUSING, PAUSED, holding no slot); resumed, it continues from there, and its losses
are those of the same run never paused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from tests.builders import API_KEY, job_body, wait_for, wait_until
from tests.conftest import MakeSettings

pytestmark = pytest.mark.timeout(300)

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
STEPS = 200
TRAINING = {
    "max_steps": STEPS,
    "batch_size": 4,
    "learning_rate": 3e-3,
    "max_seq_length": 64,
    "logging_steps": 1,
    "seed": 7,
    "save_steps": None,  # the only checkpoint is the one the pause makes
}


def events(client: TestClient, name: str) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/jobs/{name}/events").json()["data"]  # type: ignore[no-any-return]


def losses(client: TestClient, name: str) -> dict[int, float]:
    metrics = client.get(f"/api/v1/jobs/{name}/metrics").json()["data"]
    return {m["step"]: m["loss"] for m in metrics if m["loss"] is not None}


def step_of(client: TestClient, name: str) -> int:
    progress = client.get(f"/api/v1/jobs/{name}").json()["progress"]
    return int(progress["step"]) if progress else 0


def test_a_paused_job_resumes_on_the_same_curve_and_frees_its_slot(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(local_max_jobs=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert (
            client.post(
                "/api/v1/jobs", json=job_body(name="paused", hyperparameters=TRAINING)
            ).status_code
            == 202
        )
        wait_until(lambda: step_of(client, "paused") >= 5, timeout=120)

        pausing = client.post("/api/v1/jobs/paused/pause")

        assert pausing.status_code == 202 and pausing.json()["status"] == "PAUSING"
        paused = wait_for(client, "paused", {"PAUSED", *TERMINAL})
        assert paused["status"] == "PAUSED"
        [checkpoint] = client.get("/api/v1/jobs/paused/checkpoints").json()["data"]
        at = checkpoint["step"]
        assert checkpoint["complete"] and 5 <= at < STEPS
        assert max(losses(client, "paused")) == at  # it stopped where it saved
        kinds = [(e["type"], e["status"], e["actor"]) for e in events(client, "paused")]
        assert ("pause_requested", "RUNNING", "tester") in kinds
        assert ("status_changed", "PAUSING", "tester") in kinds
        assert kinds[-1] == ("status_changed", "PAUSED", "system")
        assert "at checkpoint-" in events(client, "paused")[-1]["message"]
        logs = client.get("/api/v1/jobs/paused/logs", params={"raw": True}).text
        assert f'ainfinity-paused {{"step":{at}' in logs

        # Paused, it holds no slot: the one slot runs the reference run, never paused.
        body = job_body(name="reference", hyperparameters=TRAINING)
        assert client.post("/api/v1/jobs", json=body).status_code == 202
        assert wait_for(client, "reference", TERMINAL)["status"] == "SUCCEEDED"

        resumed = client.post("/api/v1/jobs/paused/resume")
        assert resumed.status_code == 202 and resumed.json()["status"] == "PENDING"
        done = wait_for(client, "paused", TERMINAL)
        assert done["status"] == "SUCCEEDED", client.get("/api/v1/jobs/paused/logs").text[-2000:]

        kinds = [(e["type"], e["status"], e["actor"]) for e in events(client, "paused")]
        assert ("resumed", "PAUSED", "tester") in kinds
        # Every step once, in order: the metrics continue the same curve...
        after, reference = losses(client, "paused"), losses(client, "reference")
        assert list(after) == list(range(1, STEPS + 1))
        # ...and it is the curve of the run that never paused.
        for step in range(at + 1, STEPS + 1):
            assert abs(after[step] - reference[step]) < 1e-3, (step, after[step], reference[step])
        assert "resuming from" in client.get("/api/v1/jobs/paused/logs").text


def test_what_cannot_be_paused_or_resumed_is_409(make_settings: MakeSettings) -> None:
    settings = make_settings(local_max_jobs=0)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.post("/api/v1/jobs", json=job_body(name="queued"))
        client.post("/api/v1/jobs", json=job_body(name="ended"))
        client.post("/api/v1/jobs/ended/cancel")

        queued = client.post("/api/v1/jobs/queued/pause")
        ended = client.post("/api/v1/jobs/ended/pause")
        not_paused = client.post("/api/v1/jobs/queued/resume")
        missing = client.post("/api/v1/jobs/missing/pause")

        assert (queued.status_code, queued.json()["detail"]["code"]) == (409, "job_not_running")
        assert (ended.status_code, ended.json()["detail"]["code"]) == (409, "job_finished")
        assert (not_paused.status_code, not_paused.json()["detail"]["code"]) == (
            409,
            "job_not_paused",
        )
        assert missing.status_code == 404
        assert client.get("/api/v1/jobs/queued").json()["status"] == "PENDING"


def test_a_paused_job_can_be_cancelled(make_settings: MakeSettings) -> None:
    settings = make_settings(local_max_jobs=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        body = job_body(name="short", hyperparameters={**TRAINING, "max_steps": 1_000_000})
        client.post("/api/v1/jobs", json=body)
        wait_until(lambda: step_of(client, "short") >= 2, timeout=120)
        client.post("/api/v1/jobs/short/pause")
        assert wait_for(client, "short", {"PAUSED", *TERMINAL})["status"] == "PAUSED"

        cancelled = client.post("/api/v1/jobs/short/cancel")

        assert cancelled.status_code == 202 and cancelled.json()["status"] == "CANCELLED"
        assert events(client, "short")[-1]["message"] == "cancelled while paused"
