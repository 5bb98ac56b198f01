"""SkyPilot jobs carry `cost_per_hour` and `cost_to_date` from the cluster they ran on
(SkyPilot's managed-job record: cloud, region, accelerators, start and end), priced from the
catalog (tests/fixtures/sky_runtime: A100:8 on GCP us-central1, 29.38462 $/h on demand)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, job_body, wait_for
from tests.conftest import MakeSettings
from tests.deployments.conftest import wait_until
from tests.sky_fake import RecordingSkyPilot

GCP_A100_8 = 29.38462


@pytest.fixture
def sky_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(executor="skypilot", skypilot_poll_seconds=0.05)


@pytest.fixture
def fake() -> RecordingSkyPilot:
    return RecordingSkyPilot()


@pytest.fixture
def sky_client(sky_settings: Settings, fake: RecordingSkyPilot) -> Iterator[TestClient]:
    with TestClient(
        create_app(sky_settings, skypilot_sdk=fake), headers={"X-API-Key": API_KEY}
    ) as client:
        yield client


def test_a_finished_job_costs_its_clusters_hours(
    sky_client: TestClient, fake: RecordingSkyPilot
) -> None:
    body = job_body(name="sky1", resources={"accelerators": "A100:8", "cloud": "gcp"})
    assert sky_client.post("/api/v1/jobs", json=body).status_code == 202
    wait_until(lambda: fake.jobs)
    job_id = fake.job_id("sky1")
    ended = time.time()
    started = ended - 1800  # half an hour on the cluster
    cluster = {
        "cloud": "GCP",
        "region": "us-central1",
        "accelerators": {"A100": 8},
        "start_at": started,
        "end_at": ended,
    }
    fake.set_status(job_id, "RUNNING", **{k: v for k, v in cluster.items() if k != "end_at"})
    running = wait_until(
        lambda: (j := sky_client.get("/api/v1/jobs/sky1").json())["cost_per_hour"] and j
    )
    assert running["cost_per_hour"] == GCP_A100_8
    fake.log(job_id, "ainfinity-done {}\n")
    fake.set_status(job_id, "SUCCEEDED", **cluster)
    wait_for(sky_client, "sky1", {"SUCCEEDED", "FAILED"})
    done = wait_until(
        lambda: (
            (j := sky_client.get("/api/v1/jobs/sky1").json())["cost_to_date"]
            == pytest.approx(0.5 * GCP_A100_8)
            and j
        )
    )
    assert done["cost_per_hour"] == GCP_A100_8
    usage = sky_client.get("/api/v1/usage").json()
    assert usage["total"] == pytest.approx(0.5 * GCP_A100_8)
    assert {row["key"] for row in usage["data"]} == {"tester"}
