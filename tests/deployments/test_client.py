"""The Python client's deployment and usage calls, against an app on the recording SkyServe."""

from __future__ import annotations

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.client import Client
from ainfinity.client.errors import Conflict, NotFound
from ainfinity.schema.deployment import DeploymentCreate, DeploymentStatus
from tests.builders import API_KEY
from tests.deployments.conftest import MODEL, OTHER_MODEL, wait_until
from tests.sky_serve_fake import RecordingSkyServe


class ThroughTestClient(httpx.BaseTransport):
    """The client's requests, sent through the test app's own client (its lifespan runs)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(
            request.method, str(request.url), content=request.read(), headers=request.headers
        )
        return httpx.Response(
            answer.status_code, headers=answer.headers.multi_items(), content=answer.content
        )


def test_client_drives_a_deployment(
    deploy_client: TestClient, serve_fake: RecordingSkyServe
) -> None:
    with Client("http://testserver", API_KEY, transport=ThroughTestClient(deploy_client)) as api:
        spec = DeploymentCreate(
            name="bot", model=MODEL, executor="skypilot", resources={"cloud": "aws"}
        )
        created = api.create_deployment(spec)
        assert created.status == DeploymentStatus.PENDING and created.engine == "transformers"
        with pytest.raises(Conflict):
            api.create_deployment(spec)
        wait_until(lambda: "bot" in serve_fake.services)
        serve_fake.set_replica("bot", 1, "READY", launched_at=1_700_000_000)
        serve_fake.set_service("bot", "READY")
        wait_until(lambda: api.get_deployment("bot").status == DeploymentStatus.READY)
        assert [d.name for d in api.list_deployments_page().data] == ["bot"]
        assert yaml.safe_load(api.deployment_task("bot"))["envs"]["AINFINITY_MODEL_ID"] == MODEL
        assert api.update_deployment("bot", OTHER_MODEL).status == DeploymentStatus.UPDATING
        assert api.deployment_events("bot")[0].type == "created"
        assert api.delete_deployment("bot").status == DeploymentStatus.STOPPING
        assert api.usage().total == 0.0  # an unpriced CPU replica
        with pytest.raises(NotFound):
            api.get_deployment("nope")
