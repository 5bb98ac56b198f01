"""SkyPilot's real SDK with no API server to talk to (the local one disabled, as conftest
sets SKYPILOT_DISABLE_LOCAL_API_SERVER=1): the deployment ends FAILED, saying why."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY
from tests.deployments.conftest import deployment_body, statuses, wait_status


@pytest.fixture
def real_sdk_client(deploy_settings: Settings) -> Iterator[TestClient]:
    assert os.environ["SKYPILOT_DISABLE_LOCAL_API_SERVER"] == "1"
    with TestClient(create_app(deploy_settings), headers={"X-API-Key": API_KEY}) as client:
        yield client


def test_no_api_server_ends_failed_with_a_readable_reason(real_sdk_client: TestClient) -> None:
    assert real_sdk_client.post("/api/v1/deployments", json=deployment_body()).status_code == 202
    failed = wait_status(real_sdk_client, "bot", "FAILED", timeout=60)
    reason = failed["failure_reason"]
    assert reason.startswith("sky serve up failed: ")
    assert "API server" in reason and "\x1b" not in reason and len(reason) < 600
    assert statuses(real_sdk_client, "bot") == ["PENDING", "PROVISIONING", "FAILED"]
    # Taking the failed deployment down needs SkyServe too: it fails the same readable way
    # or finds nothing to take down; either way the record stays.
    assert real_sdk_client.delete("/api/v1/deployments/bot").status_code == 202
    final = wait_status(real_sdk_client, "bot", {"STOPPED", "FAILED"}, timeout=60)
    assert final["name"] == "bot"
