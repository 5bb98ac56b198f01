"""`POST /api/v1/jobs/estimate`: hourly prices from SkyPilot's catalog, read offline.

The catalog is tests/fixtures/sky_runtime (copied by conftest): A100:8 costs, per node,
on-demand: GCP us-central1 29.38462 < AWS 32.7726 (both regions) < Azure eastus 35.1;
spot: AWS us-west-2 11.9 < GCP us-central1 12.158 < Azure eastus 14.2.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from tests.builders import job_body

ESTIMATE = "/api/v1/jobs/estimate"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the internet (a catalog download, a cloud API) fails the test."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def estimate(client: TestClient, **resources: Any) -> dict[str, Any]:
    response = client.post(ESTIMATE, json=job_body(resources=resources))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refusal(client: TestClient, **resources: Any) -> str:
    response = client.post(ESTIMATE, json=job_body(resources=resources))
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "invalid_spec"
    message: str = response.json()["detail"]["msg"]
    return message


class TestEstimateCost:
    def test_answers_the_cheapest_offer_across_clouds(self, client: TestClient) -> None:
        body = estimate(client, accelerators="A100:8")
        assert body["clouds"] == ["aws", "azure", "gcp"]
        assert body["accelerators"] == "A100:8" and body["currency"] == "USD"
        assert body["cheapest"] == {
            "cloud": "gcp",
            "region": "us-central1",
            "instance_type": "a2-highgpu-8g",  # host VM and GPUs priced together
            "accelerators": "A100:8",
            "use_spot": False,
            "hourly_price_per_node": 29.38462,
            "hourly_price_total": 29.38462,
        }
        # One alternative per other instance type, cheapest first.
        alternatives = [(o["cloud"], o["instance_type"]) for o in body["alternatives"]]
        assert alternatives == [("aws", "p4d.24xlarge"), ("azure", "Standard_ND96asr_v4")]
        assert body["alternatives"][0]["hourly_price_per_node"] == 32.7726

    def test_spot_is_cheaper_and_may_be_another_cloud(self, client: TestClient) -> None:
        on_demand = estimate(client, accelerators="A100:8")["cheapest"]
        spot = estimate(client, accelerators="A100:8", use_spot=True)["cheapest"]
        assert (spot["cloud"], spot["region"], spot["use_spot"]) == ("aws", "us-west-2", True)
        assert spot["hourly_price_per_node"] == 11.9
        assert spot["hourly_price_per_node"] < on_demand["hourly_price_per_node"]

    def test_num_nodes_multiplies_the_total(self, client: TestClient) -> None:
        body = estimate(client, accelerators="A100:8", num_nodes=4, use_spot=True)
        assert body["num_nodes"] == 4
        assert body["cheapest"]["hourly_price_per_node"] == 11.9
        assert body["cheapest"]["hourly_price_total"] == pytest.approx(47.6)
        for offer in body["alternatives"]:
            assert offer["hourly_price_total"] == pytest.approx(4 * offer["hourly_price_per_node"])

    def test_a_region_narrows_the_search(self, client: TestClient) -> None:
        body = estimate(client, accelerators="A100:8", region="us-east-1")
        assert body["cheapest"]["cloud"] == "aws"
        assert body["cheapest"]["region"] == "us-east-1"
        assert body["alternatives"] == []

    def test_a_cloud_narrows_the_search(self, client: TestClient) -> None:
        body = estimate(client, accelerators="a100:8", cloud="azure", use_spot=True)
        assert body["clouds"] == ["azure"]
        assert body["cheapest"]["region"] == "eastus"
        assert body["cheapest"]["accelerators"] == "A100:8"  # the catalog's spelling
        assert body["cheapest"]["hourly_price_per_node"] == 14.2

    def test_a_bare_accelerator_name_means_one(self, client: TestClient) -> None:
        body = estimate(client, accelerators="L4")
        assert body["cheapest"]["accelerators"] == "L4:1"
        assert body["cheapest"]["cloud"] == "gcp"  # g2-standard-4 + L4: 0.71683 < 0.8048

    def test_an_unknown_accelerator_is_422(self, client: TestClient) -> None:
        assert "no accelerator 'ZZ999'" in refusal(client, accelerators="ZZ999:8")

    def test_a_count_no_instance_has_is_422_with_the_counts_there_are(
        self, client: TestClient
    ) -> None:
        assert refusal(client, accelerators="A100:2") == (
            "A100 comes 1, 8 to a node in aws, azure, gcp, not 2."
        )

    def test_no_offer_in_the_region_is_422(self, client: TestClient) -> None:
        message = refusal(client, accelerators="H100:8", region="us-central1")
        assert "no accelerator 'H100'" in message and "us-central1" in message

    def test_without_accelerators_is_422(self, client: TestClient) -> None:
        assert "resources.accelerators" in refusal(client)

    @pytest.mark.parametrize(
        ("cloud", "reason"), [("nocloud", "no cloud named"), ("kubernetes", "no price list")]
    )
    def test_a_cloud_without_prices_is_422(
        self, client: TestClient, cloud: str, reason: str
    ) -> None:
        assert reason in refusal(client, accelerators="A100:8", cloud=cloud)

    def test_a_malformed_body_is_refused_before_any_catalog(self, client: TestClient) -> None:
        response = client.post(ESTIMATE, json=job_body(resources={"accelerators": "A100:eight"}))
        assert response.status_code == 422
        assert response.json()["detail"]["code"] == "validation_error"

    def test_nothing_is_stored_and_the_catalog_is_read_offline(
        self, client: TestClient, settings: Settings
    ) -> None:
        estimate(client, accelerators="A100:8")
        estimate(client, accelerators="A100:8", use_spot=True, region="us-west-2")
        assert list((settings.home / "jobs").iterdir()) == []
        assert client.get("/api/v1/jobs").json()["data"] == []
        # SkyPilot creates this folder before it downloads any catalog file.
        catalogs = Path(os.environ["SKY_RUNTIME_DIR"]) / ".sky" / "catalogs" / "v8"
        assert (catalogs / "aws" / "vms.csv").is_file()
        assert not (catalogs / ".meta").exists()

    def test_needs_an_api_key(self, client: TestClient) -> None:
        response = client.post(ESTIMATE, json=job_body(), headers={"X-API-Key": ""})
        assert response.status_code == 401
