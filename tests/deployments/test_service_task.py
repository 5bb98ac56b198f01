"""Every SkyServe task a deployment renders is checked by SkyPilot's own code
(`sky.Task.from_yaml_config`, `sky.serve.validate_service_task`, the task's validation),
offline; what it refuses is a 422 `invalid_spec` at POST. Client values travel as data:
the scripts stay byte-identical to `skylaunch/serve.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sky
import yaml
from fastapi.testclient import TestClient

from ainfinity.deployments.model_files import NODE_ADAPTER_DIR, NODE_MODEL_DIR, ReplicaModel
from ainfinity.deployments.serve_render import (
    choose_engine,
    load_serve_template,
    render_service,
    validate_service,
    with_token,
)
from ainfinity.exceptions import InvalidSpec
from ainfinity.executors.sky_wheel import server_wheel
from ainfinity.schema.deployment import DeploymentSpec
from tests.builders import ROOT
from tests.deployments.conftest import MODEL, deployment_body
from tests.sky_serve_fake import RecordingSkyServe

NASTY = 'it\'s "quoted" $(touch /tmp/pwned) `id` ${HOME}\n; rm -rf /'
FULL = ReplicaModel(
    id=MODEL,
    load=NODE_MODEL_DIR,
    served_name=MODEL,
    file_mounts={NODE_MODEL_DIR: str(ROOT / "samples")},
)
LORA = ReplicaModel(
    id="ft:Qwen/Qwen2-0.5B:lora-1",
    load="Qwen/Qwen2-0.5B",
    served_name="Qwen/Qwen2-0.5B",
    adapter=NODE_ADAPTER_DIR,
    tokenizer=NODE_ADAPTER_DIR,
    file_mounts={NODE_ADAPTER_DIR: "s3://team-bucket/runs/lora-1"},
)


def render(model: ReplicaModel = FULL, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "bot",
        "model": model.id,
        "executor": "skypilot",
        "engine": "auto",
        "resources": {"accelerators": "L4:1", "cloud": "aws"},
    }
    values.update(fields)
    spec = DeploymentSpec.model_validate(values)
    return render_service(
        load_serve_template(), spec, model, engine=choose_engine(spec), pip_spec=None
    )


def parsed(task: dict[str, Any]) -> Any:
    validate_service(with_token(task, "secret-token"))
    return sky.Task.from_yaml_config(with_token(task, "secret-token"))


class TestSkyPilotAcceptsRenderedServices:
    def test_one_replica(self) -> None:
        task = parsed(render())
        assert task.service.min_replicas == 1 and task.service.max_replicas is None
        assert task.service.readiness_path == "/v1/chat/completions"
        assert task.service.post_data["max_tokens"] == 1
        assert task.service.readiness_headers == {"Authorization": "Bearer secret-token"}

    def test_three_replicas(self) -> None:
        assert parsed(render(replicas=3)).service.min_replicas == 3

    def test_autoscaling(self) -> None:
        scaling = {"min_replicas": 1, "max_replicas": 4, "target_qps_per_replica": 2.5}
        service = parsed(render(autoscaling=scaling)).service
        assert (service.min_replicas, service.max_replicas) == (1, 4)
        assert service.target_qps_per_replica == 2.5

    def test_spot(self) -> None:
        task = parsed(render(resources={"accelerators": "L4:1", "cloud": "aws", "use_spot": True}))
        assert all(r.use_spot for r in task.resources)

    def test_lora_model_from_a_bucket(self) -> None:
        rendered = render(LORA)
        task = parsed(rendered)
        assert rendered["envs"]["AINFINITY_LORA_PATH"] == NODE_ADAPTER_DIR
        assert rendered["envs"]["AINFINITY_SERVED_NAME"] == "Qwen/Qwen2-0.5B"
        assert task.service.post_data["model"] == LORA.id
        assert rendered["file_mounts"] == {NODE_ADAPTER_DIR: "s3://team-bucket/runs/lora-1"}

    def test_a_transformers_replica_installs_this_servers_wheel(self, tmp_path: Path) -> None:
        # No package index carries ainfinity: the replica gets the server's own wheel.
        wheel = server_wheel(tmp_path)
        spec = DeploymentSpec.model_validate(
            {"name": "bot", "model": MODEL, "executor": "skypilot", "engine": "transformers"}
        )
        template = load_serve_template()
        rendered = render_service(template, spec, FULL, engine="transformers", pip_spec=None,
                                  wheel=wheel)  # fmt: skip
        task = parsed(rendered)
        node_wheel = f"ainfinity-inputs/{wheel.name}"
        assert rendered["file_mounts"][node_wheel] == str(wheel)
        assert rendered["envs"]["AINFINITY_PIP_SPEC"] == f"./{node_wheel}"
        assert task.setup == template["setup"]
        # A pip spec set by the operator wins; vLLM replicas need no ainfinity at all.
        pinned = render_service(template, spec, FULL, engine="transformers",
                                pip_spec="ainfinity @ https://x/y.whl", wheel=wheel)  # fmt: skip
        assert pinned["envs"]["AINFINITY_PIP_SPEC"] == "ainfinity @ https://x/y.whl"
        assert node_wheel not in pinned["file_mounts"]
        gpu = spec.model_copy(update={"engine": "vllm"})
        on_vllm = render_service(template, gpu, FULL, engine="vllm", pip_spec=None, wheel=wheel)
        assert node_wheel not in on_vllm["file_mounts"]

    def test_metadata_with_quotes_and_substitutions_stays_data(self) -> None:
        rendered = render(metadata={"note": NASTY})
        task = parsed(rendered)
        template = load_serve_template()
        assert rendered["setup"] == template["setup"] and rendered["run"] == template["run"]
        assert task.run == template["run"] and task.setup == template["setup"]
        assert NASTY in task.envs["AINFINITY_METADATA"].encode().decode("unicode_escape")

    def test_the_stored_task_holds_no_token(self) -> None:
        assert render()["secrets"] == {"AINFINITY_API_KEY": None}


class TestSkyPilotRefusals:
    def test_unknown_cloud(self) -> None:
        with pytest.raises(InvalidSpec, match="SkyPilot rejects"):
            parsed(render(resources={"accelerators": "L4:1", "cloud": "nocloud"}))

    def test_service_name_ending_in_a_dash(self) -> None:
        with pytest.raises(InvalidSpec, match="service name"):
            parsed(render(name="bot-"))


class TestCreateChecksTheTask:
    def test_refused_task_is_422_invalid_spec(
        self, deploy_client: TestClient, serve_fake: RecordingSkyServe
    ) -> None:
        body = deployment_body(resources={"accelerators": "L4:1", "cloud": "nocloud"})
        response = deploy_client.post("/api/v1/deployments", json=body)
        assert response.status_code == 422
        assert response.json()["detail"]["code"] == "invalid_spec"
        assert "SkyPilot rejects" in response.json()["detail"]["msg"]
        assert deploy_client.get("/api/v1/deployments/bot").status_code == 404
        assert serve_fake.count("up") == 0

    def test_unknown_accelerator_is_422(self, deploy_client: TestClient) -> None:
        body = deployment_body(resources={"accelerators": "NOPE:3", "cloud": "aws"})
        response = deploy_client.post("/api/v1/deployments", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["code"] == "invalid_spec"

    def test_task_route_serves_the_checked_yaml_without_token(
        self, deploy_client: TestClient
    ) -> None:
        body = deployment_body(metadata={"note": NASTY})
        assert deploy_client.post("/api/v1/deployments", json=body).status_code == 202
        response = deploy_client.get("/api/v1/deployments/bot/task")
        assert response.headers["content-type"].startswith("application/yaml")
        task = yaml.safe_load(response.text)
        assert task["secrets"] == {"AINFINITY_API_KEY": None}
        assert task["run"] == load_serve_template()["run"]
        parsed(task)

    def test_builtin_models_are_refused_for_skyserve(self, deploy_client: TestClient) -> None:
        body = deployment_body(model="tiny-random-llama")
        response = deploy_client.post("/api/v1/deployments", json=body)
        assert response.status_code == 422
        assert response.json()["detail"]["code"] == "model_not_servable"
