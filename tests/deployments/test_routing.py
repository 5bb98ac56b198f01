"""`/v1` routes a model to its READY deployment: a fake SkyServe service whose endpoint is a
real replica (ainfinity's inference worker on loopback, serving the tiny built-in model as
the deployment's model, asking for the deployment's token as vLLM's `--api-key` does)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from ainfinity.deployments.store import DeploymentStore
from ainfinity.serving.base_models import TINY_MODEL, TINY_MODEL_SERVED_SEED
from ainfinity.serving.model_source import ModelSource
from tests.builders import API_KEY
from tests.conftest import MakeSettings
from tests.deployments.conftest import (
    MODEL,
    OTHER_MODEL,
    deployment_body,
    wait_status,
    wait_until,
)
from tests.sky_serve_fake import RecordingSkyServe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def replica_port() -> int:
    return free_port()


def start_replica(port: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    """What `skylaunch/serve.yaml`'s run: starts for the transformers engine, on loopback."""
    source = ModelSource(id=MODEL, load=TINY_MODEL, seed=TINY_MODEL_SERVED_SEED)
    command = [
        sys.executable, "-m", "ainfinity.serving.worker",
        "--host", "127.0.0.1", "--port", str(port),
        "--api-key-env", "AINFINITY_API_KEY", "--pin-model", source.to_json(),
    ]  # fmt: skip
    env = {**os.environ, "AINFINITY_API_KEY": token}
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def replica_client(
    make_settings: MakeSettings, model_dir: Path, serve_fake: RecordingSkyServe, replica_port: int
) -> Iterator[TestClient]:
    from ainfinity.api.main import create_app

    settings = make_settings(executor="skypilot", model_dirs=[model_dir], deploy_poll_seconds=0.05)
    serve_fake.endpoint = f"127.0.0.1:{replica_port}"
    with TestClient(
        create_app(settings, skyserve_sdk=serve_fake), headers={"X-API-Key": API_KEY}
    ) as client:
        yield client


def test_chat_travels_the_route_with_the_deployments_token(
    replica_client: TestClient,
    serve_fake: RecordingSkyServe,
    replica_port: int,
    tmp_path: Path,
) -> None:
    client = replica_client
    assert client.post("/api/v1/deployments", json=deployment_body()).status_code == 202
    token = DeploymentStore(tmp_path / "home").token("bot")
    replica = start_replica(replica_port, token, tmp_path / "replica.log")
    try:
        base = f"http://127.0.0.1:{replica_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=180)
        wait_until(lambda: "bot" in serve_fake.services)
        serve_fake.set_replica("bot", 1, "READY", launched_at=1_700_000_000)
        serve_fake.set_service("bot", "READY")
        ready = wait_status(client, "bot", "READY")
        assert ready["endpoint"] == f"127.0.0.1:{replica_port}"

        sdk = openai.OpenAI(
            base_url="http://testserver/v1",
            api_key=API_KEY,
            http_client=client,
            max_retries=0,
            _strict_response_validation=True,
        )
        answer = sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert answer.model == MODEL and answer.choices[0].message.role == "assistant"
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
            )
        )
        assert chunks and chunks[0].model == MODEL
        # It went to the replica: the replica counted both requests.
        stats = httpx.get(f"{base}/stats", headers={"authorization": f"Bearer {token}"}).json()
        assert stats["requests_served"] >= 2

        # The replica refuses a wrong token, and no token at all.
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        wrong = httpx.post(
            f"{base}/v1/chat/completions", json=body, headers={"authorization": "Bearer wrong"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.post(f"{base}/v1/chat/completions", json=body).status_code == 401

        # A deployment whose replicas refuse its token (here: another deployment's replica)
        # is the server's fault: 503, never the replica's 401 passed on to a good key.
        other = deployment_body(name="bot2", model=OTHER_MODEL)
        assert client.post("/api/v1/deployments", json=other).status_code == 202
        wait_until(lambda: "bot2" in serve_fake.services)
        serve_fake.set_replica("bot2", 1, "READY", launched_at=1_700_000_000)
        serve_fake.set_service("bot2", "READY")
        wait_status(client, "bot2", "READY")
        refused = client.post(
            "/v1/chat/completions",
            json={"model": OTHER_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "deployment_unavailable"
    finally:
        replica.terminate()
        replica.wait(timeout=30)
