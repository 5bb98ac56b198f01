"""A real server for the OpenAI fine-tuning tests, and the official SDK as its client.

`ft_server` is `uvicorn ainfinity.api.main:app` on loopback (module-wide) with the keys of
the serving tests (`tester` admin, `alice` and `bob` users) and two local job slots.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.builders import ROOT
from tests.servers import UvicornServer

ALICE_KEY = "test-key-alice-user-000111"
BOB_KEY = "test-key-bob-user-222333444"
ADMIN_KEY = "test-key-admin-ft-99887766"
KEYS = f"tester:{ADMIN_KEY},alice:{ALICE_KEY}:user,bob:{BOB_KEY}:user"
SAMPLE_CHAT = ROOT / "samples" / "tiny_chat.jsonl"
SAMPLE_CHAT_VAL = ROOT / "samples" / "tiny_chat_val.jsonl"
ENDED = {"succeeded", "failed", "cancelled"}


def ft_server_at(tmp: Path, **env: str) -> UvicornServer:
    values = {
        "AINFINITY_API_KEYS": KEYS,
        "AINFINITY_LOCAL_MAX_JOBS": "2",
        "AINFINITY_DATA_DIRS": f"{tmp / 'data'},{ROOT / 'samples'}",
        **env,
    }
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    return UvicornServer(tmp / "home", env=values)


@pytest.fixture(scope="module")
def ft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    with ft_server_at(tmp_path_factory.mktemp("ft")) as server:
        yield server


def sdk(server: UvicornServer, key: str = ALICE_KEY, **kwargs: Any) -> openai.OpenAI:
    """The official SDK, strict about every shape it parses, as a user would build it."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 120)
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, _strict_response_validation=True, **kwargs
    )


def wait_job(
    client: openai.OpenAI, job_id: str, statuses: set[str] = ENDED, timeout: float = 240
) -> FineTuningJob:
    """Poll `retrieve`, as an OpenAI user's script does, until the status is one of these."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} is still {job.status}: {job}"
        time.sleep(0.3)


def train_losses(client: openai.OpenAI, job_id: str) -> dict[int, float]:
    """Training loss by step, from the job's `metrics` events (auto-paginated)."""
    losses: dict[int, float] = {}
    for event in client.fine_tuning.jobs.list_events(job_id, limit=100):
        data: dict[str, Any] = event.data or {}  # type: ignore[assignment]
        if event.type == "metrics" and "train_loss" in data:
            losses.setdefault(int(data["step"]), float(data["train_loss"]))
    return dict(sorted(losses.items()))
