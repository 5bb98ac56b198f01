"""Local deployments: a dedicated worker on this server with the model pinned, babysat like
the on-demand worker, answering `/v1` for its model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.serving.base_models import TINY_MODEL
from tests.builders import API_KEY
from tests.conftest import MakeSettings
from tests.deployments.conftest import statuses, wait_status


@pytest.fixture
def local_client(make_settings: MakeSettings) -> Iterator[TestClient]:
    settings = make_settings(deploy_poll_seconds=0.1, local_max_deployments=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        yield client


def local_body(**overrides: object) -> dict[str, object]:
    return {"name": "pinned", "model": TINY_MODEL, "executor": "local", **overrides}


def test_pinned_worker_serves_the_model_then_stops(local_client: TestClient) -> None:
    created = local_client.post("/api/v1/deployments", json=local_body())
    assert created.status_code == 202, created.text
    assert created.json()["engine"] == "transformers"
    ready = wait_status(local_client, "pinned", "READY", timeout=180)
    assert ready["cost_to_date"] is None  # this server's own machine: no catalog price
    answer = local_client.post(
        "/v1/chat/completions",
        json={
            "model": TINY_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == TINY_MODEL
    # It was the deployment's worker that answered: the on-demand one never started.
    assert local_client.get("/api/v1/serving").json()["workers"][0]["status"] == "stopped"
    # One local deployment is all this server allows.
    second = local_client.post("/api/v1/deployments", json=local_body(name="second"))
    assert second.status_code == 409 and second.json()["detail"]["code"] == "deployment_limit"
    logs = local_client.get("/api/v1/deployments/pinned/logs")
    assert logs.status_code == 200
    task = local_client.get("/api/v1/deployments/pinned/task")
    assert task.status_code == 409 and task.json()["detail"]["code"] == "no_service_task"

    assert local_client.delete("/api/v1/deployments/pinned").status_code == 202
    wait_status(local_client, "pinned", "STOPPED", timeout=60)
    assert statuses(local_client, "pinned") == [
        "PENDING",
        "PROVISIONING",
        "READY",
        "STOPPING",
        "STOPPED",
    ]
    home = local_client.app.state.settings.home  # type: ignore[attr-defined]
    assert not (home / "deployments" / "pinned" / "worker" / "wanted").exists()


def test_local_deployment_refuses_replicas(local_client: TestClient) -> None:
    response = local_client.post("/api/v1/deployments", json=local_body(replicas=2))
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_spec"


@pytest.fixture
def saved_tiny_model(tmp_path: Path) -> Path:
    """The tiny model saved as a model directory (another model a worker can load)."""
    from ainfinity.train.tiny_model import build_tiny_random_llama

    model, tokenizer = build_tiny_random_llama(7)
    target = tmp_path / "models" / "tiny-dir"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target.parent


def test_rolling_update_of_a_local_deployment(
    make_settings: MakeSettings, saved_tiny_model: Path
) -> None:
    settings = make_settings(deploy_poll_seconds=0.1, model_dirs=[saved_tiny_model])
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.post("/api/v1/deployments", json=local_body()).status_code == 202
        wait_status(client, "pinned", "READY", timeout=180)
        patched = client.patch("/api/v1/deployments/pinned", json={"model": "tiny-dir"})
        assert patched.status_code == 202 and patched.json()["status"] == "UPDATING"
        done = wait_status(client, "pinned", "READY", timeout=180)
        assert done["model"] == "tiny-dir" and done["updating_to"] is None
        answer = client.post(
            "/v1/chat/completions",
            json={
                "model": "tiny-dir",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
            },
        )
        assert answer.status_code == 200, answer.text
        assert client.get("/api/v1/serving").json()["workers"][0]["status"] == "stopped"
        client.delete("/api/v1/deployments/pinned")
        wait_status(client, "pinned", "STOPPED", timeout=60)
