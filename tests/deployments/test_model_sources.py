"""Where a replica gets a fine-tuned model: a LoRA job that ran on SkyPilot with an
`output_uri` bucket is deployed as its base (a hub id the replica downloads) with the adapter
mounted from that bucket; the task is checked by SkyPilot's own code, bucket source included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.deployments.model_files import NODE_ADAPTER_DIR
from tests.builders import API_KEY, job_body, wait_for
from tests.deployments.conftest import deployment_body, wait_until
from tests.sky_fake import RecordingSkyPilot
from tests.sky_serve_fake import RecordingSkyServe

BASE = "Qwen/Qwen2-0.5B-Instruct"
BUCKET = "s3://team-bucket/runs"


@pytest.fixture
def both_fakes_client(
    deploy_settings: Settings, serve_fake: RecordingSkyServe
) -> Iterator[tuple[TestClient, RecordingSkyPilot]]:
    jobs = RecordingSkyPilot()
    settings = deploy_settings.model_copy(update={"skypilot_poll_seconds": 0.05})
    app = create_app(settings, skypilot_sdk=jobs, skyserve_sdk=serve_fake)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client, jobs


def test_lora_model_from_its_jobs_bucket(
    both_fakes_client: tuple[TestClient, RecordingSkyPilot], serve_fake: RecordingSkyServe
) -> None:
    client, jobs = both_fakes_client
    body = job_body(name="lora1", model=BASE, method="lora", executor="skypilot", output_uri=BUCKET)
    created = client.post("/api/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    wait_until(lambda: jobs.jobs)
    job_id = jobs.job_id("lora1")
    jobs.set_status(job_id, "RUNNING")
    jobs.log(job_id, "ainfinity-done {}\n")
    jobs.set_status(job_id, "SUCCEEDED")
    job = wait_for(client, "lora1", {"SUCCEEDED", "FAILED"})
    assert job["status"] == "SUCCEEDED", job
    model = wait_until(lambda: client.get("/api/v1/jobs/lora1").json()["fine_tuned_model"])

    response = client.post("/api/v1/deployments", json=deployment_body(model=model))
    assert response.status_code == 202, response.text
    task = yaml.safe_load(client.get("/api/v1/deployments/bot/task").text)
    assert task["file_mounts"] == {NODE_ADAPTER_DIR: BUCKET}  # the job wrote there
    assert task["envs"]["AINFINITY_MODEL_PATH"] == BASE
    assert task["envs"]["AINFINITY_SERVED_NAME"] == BASE
    assert task["envs"]["AINFINITY_LORA_PATH"] == NODE_ADAPTER_DIR
    assert task["envs"]["AINFINITY_MODEL_ID"] == model
    # The fake checks what `up` gets with SkyPilot's own code, as POST did.
    wait_until(lambda: serve_fake.count("up") == 1)
