"""What deployments and SkyPilot jobs cost: catalog prices, replica-hours, usage per key/day.

The catalog is tests/fixtures/sky_runtime: L4:1 on AWS costs 0.8048 $/h on demand, and
0.3327 $/h spot at its cheapest (us-west-2).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.deployments.store import DeploymentStore
from ainfinity.finops.deployment_costs import deployment_costs
from ainfinity.finops.job_costs import job_costs
from ainfinity.schema.deployment import DeploymentRecord, Replica
from tests.builders import API_KEY, OTHER_KEY
from tests.deployments.conftest import deployment_body
from tests.sky_serve_fake import RecordingSkyServe

ON_DEMAND, SPOT = 0.8048, 0.3327
T0 = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)


def two_replicas(record: DeploymentRecord) -> list[Replica]:
    """Replica 1 ran 22:00 -> 00:30 (2.5 h, across midnight); replica 2 from 23:00, live."""
    return [
        Replica(id=1, status="PREEMPTED", launched_at=T0, ended_at=T0 + timedelta(hours=2.5)),
        Replica(id=2, status="READY", launched_at=T0 + timedelta(hours=1)),
    ]


@pytest.fixture
def created(deploy_client: TestClient) -> DeploymentRecord:
    assert deploy_client.post("/api/v1/deployments", json=deployment_body()).status_code == 202
    return DeploymentRecord.model_validate(deploy_client.get("/api/v1/deployments/bot").json())


class TestDeploymentCosts:
    def test_prices_come_from_the_catalog(self, deploy_client: TestClient) -> None:
        body = deployment_body(resources={"accelerators": "L4:1", "cloud": "aws", "use_spot": True})
        spot = deploy_client.post("/api/v1/deployments", json=body).json()
        assert spot["cost_per_replica_hour"] == SPOT
        body = deployment_body(name="od")
        assert (
            deploy_client.post("/api/v1/deployments", json=body).json()["cost_per_replica_hour"]
            == ON_DEMAND
        )

    def test_cost_to_date_of_two_replicas_by_hand(
        self, deploy_settings: Settings, created: DeploymentRecord
    ) -> None:
        record = DeploymentStore(deploy_settings.home).get("bot")
        record.replicas = two_replicas(record)
        now = T0 + timedelta(hours=3)  # replica 2 has run 2 h
        costs = deployment_costs(record, now)
        # (2.5 h + 2 h) x 0.8048 $/h = 3.6216 $; only replica 2 runs now.
        assert costs["cost_to_date"] == pytest.approx(4.5 * 0.8048) == pytest.approx(3.6216)
        assert costs["cost_per_hour"] == ON_DEMAND
        assert [r.hourly_price for r in costs["replicas"]] == [ON_DEMAND, ON_DEMAND]
        # A spot replica is priced as one.
        record.replicas[0].is_spot = True
        costs = deployment_costs(record, now)
        assert costs["cost_to_date"] == pytest.approx(2.5 * SPOT + 2 * ON_DEMAND)

    def test_a_replica_never_launched_costs_nothing(
        self, deploy_settings: Settings, created: DeploymentRecord
    ) -> None:
        record = DeploymentStore(deploy_settings.home).get("bot")
        record.replicas = [Replica(id=1, status="PROVISIONING")]
        assert deployment_costs(record, T0)["cost_to_date"] == 0


class TestJobCosts:
    def test_cost_from_the_cluster_window(self) -> None:
        start = T0.timestamp()
        cluster = {"cost_per_hour": 29.38462, "start_at": start, "end_at": start + 5400}
        costs = job_costs({"cluster": cluster}, finished_at=None, now=T0)
        assert costs == {"cost_per_hour": 29.38462, "cost_to_date": pytest.approx(1.5 * 29.38462)}

    def test_unpriced_job(self) -> None:
        assert job_costs({}, finished_at=None, now=T0) == {
            "cost_per_hour": None,
            "cost_to_date": None,
        }


class TestUsage:
    def test_per_key_and_day(
        self,
        deploy_settings: Settings,
        deploy_client: TestClient,
        serve_fake: RecordingSkyServe,
        created: DeploymentRecord,
    ) -> None:
        store = DeploymentStore(deploy_settings.home)

        def ended(record: DeploymentRecord) -> list:  # type: ignore[type-arg]
            record.replicas = two_replicas(record)
            record.replicas[1].ended_at = T0 + timedelta(hours=3)
            return []

        store.update("bot", ended)
        rows = deploy_client.get("/api/v1/usage").json()
        # Day 1: replica 1 22:00-24:00 (2 h) + replica 2 23:00-24:00 (1 h) = 3 h;
        # day 2: 0.5 h + 1 h = 1.5 h.
        assert [(r["key"], r["day"]) for r in rows["data"]] == [
            ("tester", "2026-03-01"),
            ("tester", "2026-03-02"),
        ]
        assert rows["data"][0]["deployments"] == pytest.approx(3 * ON_DEMAND)
        assert rows["data"][1]["deployments"] == pytest.approx(1.5 * ON_DEMAND)
        assert rows["data"][0]["jobs"] == 0
        assert rows["total"] == pytest.approx(4.5 * ON_DEMAND)

    def test_a_user_key_sees_its_own(
        self, deploy_settings: Settings, serve_fake: RecordingSkyServe, created: DeploymentRecord
    ) -> None:
        store = DeploymentStore(deploy_settings.home)

        def launched(record: DeploymentRecord) -> list:  # type: ignore[type-arg]
            record.replicas = two_replicas(record)
            return []

        store.update("bot", launched)
        keys = SecretStr(f"tester:{API_KEY},other:{OTHER_KEY}:user")
        settings = deploy_settings.model_copy(update={"api_keys": keys})
        app = create_app(settings, skyserve_sdk=serve_fake)
        with TestClient(app, headers={"X-API-Key": OTHER_KEY}) as other:
            assert other.get("/api/v1/usage").json() == {"data": [], "total": 0.0}
