"""Builders and waiters shared by the tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SFT = ROOT / "samples" / "tiny_sft.jsonl"
SAMPLE_TEXT = ROOT / "samples" / "tiny_text.jsonl"
API_KEY = "test-key-tester-0123456789"
OTHER_KEY = "test-key-other-9876543210"


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /jobs` body for the built-in tiny model and the shipped sample data."""
    body: dict[str, Any] = {
        "model": "tiny-random-llama",
        "dataset": str(SAMPLE_SFT),
        "hyperparameters": {
            "max_steps": 8,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "max_seq_length": 128,
            "logging_steps": 2,
        },
    }
    body.update(overrides)
    return body


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def wait_for(
    client: TestClient, name: str, statuses: set[str], *, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll the job over HTTP until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/jobs/{name}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    log = client.get(f"/api/v1/jobs/{name}/logs", params={"tail": 40}).text
    raise AssertionError(f"{name} stayed {job.get('status')} (wanted {statuses}); log:\n{log}")


def wait_until(predicate: Any, *, timeout: float = 60.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError("condition not met in time")
