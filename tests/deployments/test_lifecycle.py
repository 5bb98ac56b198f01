"""A deployment on SkyServe, driven through SkyServe's real statuses by a recording fake:
start, preemption, failure, rolling update, down, and a control-plane restart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.deployments.store import DeploymentStore
from tests.builders import API_KEY, OTHER_KEY
from tests.deployments.conftest import (
    MODEL,
    OTHER_MODEL,
    deployment_body,
    statuses,
    wait_status,
    wait_until,
)
from tests.sky_serve_fake import ENDPOINT, RecordingSkyServe


def start_ready(client: TestClient, fake: RecordingSkyServe, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/deployments", json=deployment_body(**body))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "PENDING"
    name = response.json()["name"]
    wait_until(lambda: name in fake.services)
    assert wait_status(client, name, "PROVISIONING")["service_status"] in (None, "CONTROLLER_INIT")
    fake.set_service(name, "REPLICA_INIT")
    fake.set_replica(name, 1, "PROVISIONING")
    wait_until(lambda: client.get(f"/api/v1/deployments/{name}").json()["replicas"])
    fake.set_replica(name, 1, "READY", launched_at=1_700_000_000)
    fake.set_service(name, "READY")
    return wait_status(client, name, "READY")


class TestStart:
    def test_controller_init_replica_init_ready(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        ready = start_ready(deploy_client, serve_fake)
        assert ready["endpoint"] == ENDPOINT and ready["service_status"] == "READY"
        assert ready["replicas"] == [
            {
                "id": 1,
                "status": "READY",
                "endpoint": "http://10.0.0.1:8080",
                "version": 1,
                "is_spot": False,
                "launched_at": "2023-11-14T22:13:20Z",
                "ended_at": None,
                "hourly_price": 0.8048,
            }
        ]
        assert statuses(deploy_client, "bot") == ["PENDING", "PROVISIONING", "READY"]
        events = deploy_client.get("/api/v1/deployments/bot/events").json()["data"]
        messages = [e["message"] for e in events]
        assert (
            "SkyServe: REPLICA_INIT" in messages and "replica 1: PROVISIONING -> READY" in messages
        )
        # One `up`, its task the stored one plus the token; status read in batches.
        assert serve_fake.count("up") == 1
        sent = serve_fake.tasks["bot"][0]
        stored = yaml.safe_load(deploy_client.get("/api/v1/deployments/bot/task").text)
        token = sent["secrets"]["AINFINITY_API_KEY"]
        assert len(token) >= 32 and {**stored, "secrets": sent["secrets"]} == sent
        assert all(call[1] == ("bot",) for call in serve_fake.calls if call[0] == "status")

    def test_up_failure_ends_failed_with_reason(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        serve_fake.up_error = RuntimeError("Failed to provision the controller: quota exceeded")
        deploy_client.post("/api/v1/deployments", json=deployment_body())
        failed = wait_status(deploy_client, "bot", "FAILED")
        assert "quota exceeded" in failed["failure_reason"]
        assert failed["failure_reason"].startswith("sky serve up failed")


class TestRecovery:
    def test_preempted_replica_no_replica_then_ready(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        start_ready(
            deploy_client,
            serve_fake,
            resources={"accelerators": "L4:1", "cloud": "aws", "use_spot": True},
        )
        serve_fake.set_replica("bot", 1, "PREEMPTED", is_spot=True)
        serve_fake.set_service("bot", "NO_REPLICA")
        not_ready = wait_status(deploy_client, "bot", "NOT_READY")
        assert not_ready["replicas"][0]["status"] == "PREEMPTED"
        assert not_ready["replicas"][0]["ended_at"] is not None
        serve_fake.drop_replica("bot", 1)
        serve_fake.set_replica("bot", 2, "READY", launched_at=1_700_000_600, is_spot=True)
        serve_fake.set_service("bot", "READY")
        ready = wait_status(deploy_client, "bot", "READY")
        assert [(r["id"], r["status"]) for r in ready["replicas"]] == [
            (1, "PREEMPTED"),
            (2, "READY"),
        ]
        assert statuses(deploy_client, "bot") == [
            "PENDING",
            "PROVISIONING",
            "READY",
            "NOT_READY",
            "READY",
        ]

    def test_failed_service_carries_the_replicas_reason(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        start_ready(deploy_client, serve_fake)
        serve_fake.set_replica("bot", 1, "FAILED_PROBING")
        serve_fake.set_service("bot", "FAILED")
        failed = wait_status(deploy_client, "bot", "FAILED")
        assert "replica 1 FAILED_PROBING" in failed["failure_reason"]
        assert "readiness probe" in failed["failure_reason"]
        assert failed["stopped_at"] is not None


class TestRollingUpdate:
    def test_patch_moves_to_the_new_model(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        start_ready(deploy_client, serve_fake)
        response = deploy_client.patch("/api/v1/deployments/bot", json={"model": OTHER_MODEL})
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "UPDATING"
        assert response.json()["updating_to"] == OTHER_MODEL
        again = deploy_client.patch("/api/v1/deployments/bot", json={"model": OTHER_MODEL})
        assert again.status_code == 409
        assert again.json()["detail"]["code"] == "deployment_updating"
        wait_until(lambda: serve_fake.count("update") == 1)
        assert serve_fake.tasks["bot"][1]["envs"]["AINFINITY_MODEL_ID"] == OTHER_MODEL
        assert wait_status(deploy_client, "bot", "UPDATING")["model"] == MODEL
        serve_fake.set_replica("bot", 2, "READY", version=2, launched_at=1_700_001_000)
        done = wait_status(deploy_client, "bot", "READY")
        assert done["model"] == OTHER_MODEL and done["updating_to"] is None
        task = yaml.safe_load(deploy_client.get("/api/v1/deployments/bot/task").text)
        assert task["envs"]["AINFINITY_MODEL_ID"] == OTHER_MODEL
        types = [
            e["type"] for e in deploy_client.get("/api/v1/deployments/bot/events").json()["data"]
        ]
        assert "update_requested" in types and "updated" in types

    def test_patch_before_ready_is_409(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        serve_fake.up_gate.clear()
        deploy_client.post("/api/v1/deployments", json=deployment_body())
        response = deploy_client.patch("/api/v1/deployments/bot", json={"model": OTHER_MODEL})
        assert response.status_code == 409
        assert response.json()["detail"]["code"] == "deployment_not_ready"
        serve_fake.up_gate.set()


class TestDown:
    def test_delete_downs_the_service_and_keeps_the_record(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        start_ready(deploy_client, serve_fake)
        response = deploy_client.delete("/api/v1/deployments/bot")
        assert response.status_code == 202 and response.json()["status"] == "STOPPING"
        stopped = wait_status(deploy_client, "bot", "STOPPED")
        assert serve_fake.count("down") == 1 and "bot" not in serve_fake.services
        assert stopped["replicas"][0]["ended_at"] is not None
        assert statuses(deploy_client, "bot")[-2:] == ["STOPPING", "STOPPED"]
        again = deploy_client.delete("/api/v1/deployments/bot")
        assert again.status_code == 409 and again.json()["detail"]["code"] == "deployment_stopped"

    def test_delete_while_provisioning(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        serve_fake.up_gate.clear()
        deploy_client.post("/api/v1/deployments", json=deployment_body())
        wait_until(lambda: serve_fake.count("wait_up") == 1)
        assert deploy_client.delete("/api/v1/deployments/bot").status_code == 202
        assert wait_status(deploy_client, "bot", "STOPPED")["failure_reason"] is None
        assert serve_fake.count("down") == 1 and serve_fake.count("up") == 1
        serve_fake.up_gate.set()


class TestRestart:
    def test_restart_during_provisioning_launches_once(
        self, deploy_settings: Settings, serve_fake: RecordingSkyServe
    ) -> None:
        serve_fake.up_gate.clear()
        with TestClient(
            create_app(deploy_settings, skyserve_sdk=serve_fake), headers={"X-API-Key": API_KEY}
        ) as first:
            first.post("/api/v1/deployments", json=deployment_body())
            wait_until(lambda: serve_fake.count("wait_up") == 1)
            assert wait_status(first, "bot", "PROVISIONING")
            # The request id was stored before anything waited on it.
            stored = DeploymentStore(deploy_settings.home).get("bot").executor_state
            assert stored["up_request_id"] == "serve-up-1" and stored["up_submitted"]
        with TestClient(
            create_app(deploy_settings, skyserve_sdk=serve_fake), headers={"X-API-Key": API_KEY}
        ) as second:
            # The new process waits on the stored request again; it submits nothing.
            wait_until(lambda: serve_fake.count("wait_up") == 2)
            serve_fake.up_gate.set()
            wait_until(lambda: "bot" in serve_fake.services)
            serve_fake.set_replica("bot", 1, "READY", launched_at=1_700_000_000)
            serve_fake.set_service("bot", "READY")
            assert wait_status(second, "bot", "READY")["endpoint"] == ENDPOINT
        assert serve_fake.count("up") == 1


@pytest.fixture
def other(deploy_settings: Settings, serve_fake: RecordingSkyServe) -> Iterator[TestClient]:
    with TestClient(
        create_app(deploy_settings, skyserve_sdk=serve_fake), headers={"X-API-Key": OTHER_KEY}
    ) as client:
        yield client


class TestReads:
    def test_list_and_ownership(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        deploy_client.post("/api/v1/deployments", json=deployment_body())
        listed = deploy_client.get("/api/v1/deployments").json()
        assert [d["name"] for d in listed["data"]] == ["bot"] and listed["has_more"] is False
        missing = deploy_client.get("/api/v1/deployments/nope")
        assert missing.status_code == 404
        assert missing.json()["detail"]["code"] == "deployment_not_found"
        taken = deploy_client.post("/api/v1/deployments", json=deployment_body())
        assert taken.status_code == 409 and taken.json()["detail"]["code"] == "deployment_exists"

    def test_logs_by_target(self, deploy_client: TestClient, serve_fake: RecordingSkyServe) -> None:
        start_ready(deploy_client, serve_fake)
        serve_fake.logs[("bot", "controller", None)] = "controller says hi\n"
        serve_fake.logs[("bot", "replica", 1)] = "INFO vLLM ready\n"
        logs = deploy_client.get("/api/v1/deployments/bot/logs")
        assert logs.status_code == 200 and logs.text == "controller says hi\n"
        replica = deploy_client.get("/api/v1/deployments/bot/logs?target=replica&replica=1")
        assert replica.text == "INFO vLLM ready\n"
        balancer = deploy_client.get("/api/v1/deployments/bot/logs?target=load_balancer").text
        assert "SkyServe's log cannot be read" in balancer
        assert deploy_client.get("/api/v1/deployments/bot/logs?target=replica").status_code == 422
        followed = deploy_client.get("/api/v1/deployments/bot/logs?follow=true")
        assert followed.text == "controller says hi\n"
        assert ("tail_logs", "bot", "controller", None, True) in serve_fake.calls


def test_another_users_deployment_does_not_exist_for_them(
    deploy_settings: Settings, serve_fake: RecordingSkyServe, deploy_client: TestClient
) -> None:
    deploy_client.post("/api/v1/deployments", json=deployment_body())
    keys = f"tester:{API_KEY},other:{OTHER_KEY}:user"
    settings = deploy_settings.model_copy(
        update={"api_keys": __import__("pydantic").SecretStr(keys)}
    )
    with TestClient(
        create_app(settings, skyserve_sdk=serve_fake), headers={"X-API-Key": OTHER_KEY}
    ) as other:
        assert other.get("/api/v1/deployments/bot").status_code == 404
        assert other.get("/api/v1/deployments").json()["data"] == []
        assert other.delete("/api/v1/deployments/bot").status_code == 404


def test_status_is_read_in_one_call_for_every_deployment(
    deploy_client: TestClient, serve_fake: RecordingSkyServe
) -> None:
    for name in ("one", "two", "three"):
        deploy_client.post("/api/v1/deployments", json=deployment_body(name=name))
    wait_until(lambda: len(serve_fake.services) == 3)
    wait_until(
        lambda: any(
            call[0] == "status" and set(call[1]) == {"one", "two", "three"}
            for call in serve_fake.calls
        )
    )
