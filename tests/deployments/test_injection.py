"""Hostile strings (tests/probes.py) in every string field of a deployment's body: each is
refused, or stored as inert data. A stored task's scripts stay byte-identical to the
template, and SkyPilot's own parse of it gives back every value exactly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.deployments.serve_render import load_serve_template
from tests.deployments.conftest import deployment_body
from tests.probes import MARKER, PROBES, post_json

FIELDS: dict[str, Any] = {
    "name": lambda body, v: body.update(name=v),
    "model": lambda body, v: body.update(model=v),
    "engine": lambda body, v: body.update(engine=v),
    "accelerators": lambda body, v: body["resources"].update(accelerators=v),
    "cloud": lambda body, v: body["resources"].update(cloud=v),
    "region": lambda body, v: body["resources"].update(region=v),
    "metadata-value": lambda body, v: body.update(metadata={"note": v}),
    "metadata-key": lambda body, v: body.update(metadata={v: "x"}),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_probes_are_refused_or_inert(field: str, deploy_client: TestClient, tmp_path: Any) -> None:
    template = load_serve_template()
    for number, (probe_name, probe) in enumerate(sorted(PROBES.items())):
        marker = tmp_path / f"marker-{field}-{probe_name}"
        value = probe.replace(MARKER, str(marker))
        body = deployment_body(name=f"probe-{number}")
        FIELDS[field](body, value)
        response = post_json(deploy_client, "/api/v1/deployments", body)
        assert response.status_code in (202, 404, 409, 413, 422), (probe_name, response.text)
        if response.status_code == 202:
            name = response.json()["name"]
            task = yaml.safe_load(deploy_client.get(f"/api/v1/deployments/{name}/task").text)
            assert task["run"] == template["run"] and task["setup"] == template["setup"]
            if field == "metadata-value":
                assert response.json()["spec"]["metadata"] == {"note": value}
        assert not marker.exists(), (field, probe_name)
