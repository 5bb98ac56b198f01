"""Deployments against a recording SkyServe (`tests/sky_serve_fake.py`), each app with its
own store on `tmp_path` and a model directory holding one servable model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY
from tests.conftest import MakeSettings
from tests.sky_serve_fake import RecordingSkyServe

MODEL = "house-llama"
OTHER_MODEL = "house-llama-v2"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory with two models (a config.json each is all a listing needs)."""
    root = tmp_path / "models"
    for name in (MODEL, OTHER_MODEL):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return root


@pytest.fixture
def deploy_settings(make_settings: MakeSettings, model_dir: Path) -> Settings:
    return make_settings(executor="skypilot", model_dirs=[model_dir], deploy_poll_seconds=0.05)


@pytest.fixture
def serve_fake() -> RecordingSkyServe:
    return RecordingSkyServe()


@pytest.fixture
def deploy_client(deploy_settings: Settings, serve_fake: RecordingSkyServe) -> Iterator[TestClient]:
    app = create_app(deploy_settings, skyserve_sdk=serve_fake)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client


def deployment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "bot",
        "model": MODEL,
        "executor": "skypilot",
        "resources": {"accelerators": "L4:1", "cloud": "aws"},
    }
    body.update(overrides)
    return body


def wait_status(
    client: TestClient, name: str, wanted: set[str] | str, *, timeout: float = 15.0
) -> dict[str, Any]:
    import time

    wanted = {wanted} if isinstance(wanted, str) else wanted
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/api/v1/deployments/{name}").json()
        if found["status"] in wanted:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {wanted}: {found}")
        time.sleep(0.03)


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError("condition never held")


def statuses(client: TestClient, name: str) -> list[str]:
    events = client.get(f"/api/v1/deployments/{name}/events").json()["data"]
    return [e["status"] for e in events if e["type"] in ("created", "status_changed")]
