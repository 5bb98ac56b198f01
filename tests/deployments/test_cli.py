"""`ainfinity deployments ...` as a user runs it: a subprocess against a real server (whose
SkyPilot SDK has no API server to reach, so the deployment ends FAILED, saying why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.builders import API_KEY, ROOT
from tests.servers import UvicornServer


def run(server: UvicornServer, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ainfinity", "--url", server.url, "deployments", *args],
        env={**os.environ, "AINFINITY_API_KEY": API_KEY},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_create_list_get_delete(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "house-llama").mkdir(parents=True)
    (models / "house-llama" / "config.json").write_text('{"model_type": "llama"}')
    env = {
        "AINFINITY_MODEL_DIRS": str(models),
        "AINFINITY_DEPLOY_POLL_SECONDS": "0.2",
        "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1",
    }
    with UvicornServer(tmp_path / "home", env=env) as server:
        created = json.loads(
            run(
                server,
                "create",
                "house-llama",
                "--name",
                "bot",
                "--executor",
                "skypilot",
                "--accelerators",
                "L4:1",
                "--cloud",
                "aws",
                "--spot",
            )  # fmt: skip
        )
        assert created["status"] == "PENDING" and created["cost_per_replica_hour"] == 0.3327
        assert "bot" in run(server, "list")
        with server.client() as api:
            deadline = time.monotonic() + 30
            while api.get("/api/v1/deployments/bot").json()["status"] != "FAILED":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        found = json.loads(run(server, "get", "bot"))
        assert found["status"] == "FAILED" and "API server" in found["failure_reason"]
        assert run(server, "delete", "bot").strip() == "STOPPING"
