"""The dashboard's Deployments page, in a real browser against a real server: status,
replicas, endpoint and cost so far of a deployment already on disk."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from ainfinity.deployments.store import DeploymentStore
from ainfinity.schema.deployment import (
    DeploymentEvent,
    DeploymentEventType,
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    Replica,
    ReplicaPrices,
)
from tests.builders import API_KEY
from tests.servers import UvicornServer

CHROMIUM = Path("/usr/bin/chromium")


def write_ready_deployment(home: Path) -> None:
    """A READY two-replica deployment, as the tracker would have left it."""
    now = datetime.now(timezone.utc)
    spec = DeploymentSpec(
        name="support-bot",
        model="house-llama",
        executor="skypilot",
        engine="auto",
        resources={"accelerators": "L4:1", "cloud": "aws"},
        replicas=2,
    )
    record = DeploymentRecord(
        name="support-bot",
        status=DeploymentStatus.READY,
        executor="skypilot",
        engine="vllm",
        model="house-llama",
        spec=spec,
        created_at=now - timedelta(hours=2),
        updated_at=now,
        endpoint="34.1.2.3:30001",
        owner="default",
        prices=ReplicaPrices(on_demand=1.0, spot=0.5),
        replicas=[
            Replica(id=1, status="READY", launched_at=now - timedelta(hours=2)),
            Replica(id=2, status="STARTING", launched_at=now - timedelta(hours=1)),
        ],
    )
    store = DeploymentStore(home)
    store.initialize()
    created = DeploymentEvent(
        time=now, type=DeploymentEventType.CREATED, status=record.status, message="", actor="t"
    )
    store.create(record, created, task=b"name: support-bot\n", token="t" * 43)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
def test_deployments_page_shows_status_replicas_endpoint_and_cost(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_ready_deployment(home)
    env = {"AINFINITY_API_KEYS": f"default:{API_KEY}", "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}
    with UvicornServer(home, env=env) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/dashboard")
            page.fill("#api-key", API_KEY)
            page.click("#login-submit")
            page.click("#nav-deployments")
            row = page.locator('tr[data-deployment="support-bot"]')
            expect(row.locator(".status .badge")).to_have_text("READY")
            expect(row.locator(".replicas")).to_have_text("1/2")
            expect(row.locator(".endpoint")).to_have_text("34.1.2.3:30001")
            expect(row.locator(".cost-hour")).to_have_text("$2.00")
            # 2 h + 1 h at 1 $/h, give or take the seconds the page took.
            expect(row.locator(".cost")).to_have_text("$3.00")
        finally:
            browser.close()
