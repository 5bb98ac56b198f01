"""Hostile strings in every string field: nothing runs, nothing escapes the home."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from ainfinity.services.task_render import load_template
from tests.builders import job_body

MARKER_DIR = Path("/tmp")


def hostile_strings(marker: Path) -> list[str]:
    return [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"; touch {marker}",
        f"x && touch {marker}",
        f"line\ntouch {marker}",
        f"'; touch {marker}; echo '",
        f'"; touch {marker}; echo "',
        "../../../../../../etc/passwd",
        f"--- !!python/object/apply:os.system ['touch {marker}']",
        "${IFS}cat${IFS}/etc/passwd",
        "nul\x00byte",
    ]


def string_fields(value: str) -> list[dict[str, Any]]:
    """One request body per string field of a job, with `value` in that field."""
    base = job_body()
    return [
        {**base, "name": value},
        {**base, "model": value},
        {**base, "dataset": value},
        {**base, "resources": {"accelerators": value}},
        {**base, "resources": {"cloud": value}},
        {**base, "resources": {"region": value}},
        {**base, "metadata": {value: "v"}},
        {**base, "metadata": {"note": value}},
    ]


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


@pytest.fixture
def marker() -> Path:
    path = MARKER_DIR / f"ainfinity-pwned-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def test_hostile_values_are_refused_or_stored_inert(
    client: TestClient, settings: Settings, tmp_path: Path, marker: Path
) -> None:
    before = files_under(tmp_path) - files_under(settings.home)
    accepted = []
    for value in hostile_strings(marker):
        for body in string_fields(value):
            response = client.post("/api/v1/jobs", json=body)
            # 403: a dataset path outside AINFINITY_DATA_DIRS; 413: over the body limit.
            assert response.status_code in (202, 403, 413, 422), (body, response.text)
            assert "detail" in response.json() or response.status_code == 202
            if response.status_code == 202:
                accepted.append((response.json()["name"], value))
    # Only free-text metadata values may hold such strings; they are stored as data.
    assert accepted and all(name.startswith("job-") for name, _ in accepted)
    template = load_template()
    for name, value in accepted:
        job_dir = settings.home / "jobs" / name
        task = yaml.safe_load((job_dir / "task.yaml").read_text())
        assert task["run"] == template["run"] and task["setup"] == template["setup"]
        assert value not in (job_dir / "task.yaml").read_text()
        config = json.loads((job_dir / "workdir" / "job_config.json").read_text())
        assert config["metadata"]["note"] == value
    assert not marker.exists()
    # Nothing was written outside the server's home.
    after = files_under(tmp_path) - files_under(settings.home)
    assert after == before
