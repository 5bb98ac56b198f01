"""A real server with real fine-tuned models, shared by the serving tests.

`served` starts `uvicorn ainfinity.api.main:app` on loopback (session-wide), with three keys
(`tester` admin, `alice` and `bob` users), a model directory in AINFINITY_MODEL_DIRS, and two
models that `alice`'s jobs really trained: a full fine-tune with checkpoints and a LoRA one.
Tests that kill or starve the inference worker start servers of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.builders import API_KEY, ROOT, job_body
from tests.servers import UvicornServer

ALICE_KEY = "test-key-alice-user-000111"
BOB_KEY = "test-key-bob-user-222333444"
KEYS = f"tester:{API_KEY},alice:{ALICE_KEY}:user,bob:{BOB_KEY}:user"
SAMPLE_CHAT = ROOT / "samples" / "tiny_chat.jsonl"
# Whole conversations learnt (not only the answers, which are a number and eos): greedy
# answers are then long and varied, where a model that learnt to stop at once would answer
# "" and prove nothing. Every checkpoint is kept.
TRAINING = {
    "max_steps": 30,
    "batch_size": 4,
    "learning_rate": 3e-3,
    "max_seq_length": 128,
    "logging_steps": 5,
    "save_steps": 10,
    "save_total_limit": None,
    "completion_only_loss": False,
}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# The base models every key sees: the built-ins, and the model directory `served` adds.
BASE_MODELS = {"tiny-random-llama", "smollm2-135m-instruct", "house-llama"}


@dataclass(frozen=True)
class Served:
    server: UvicornServer
    home: Path
    model_dir: Path
    full: dict[str, Any]  # the full fine-tune's job
    lora: dict[str, Any]  # the LoRA job

    def api(self, key: str = API_KEY) -> httpx.Client:
        return self.server.client(key)

    def sdk(self, key: str = ALICE_KEY, **kwargs: Any) -> openai.OpenAI:
        return sdk_client(self.server, key, **kwargs)


def sdk_client(server: UvicornServer, key: str = ALICE_KEY, **kwargs: Any) -> openai.OpenAI:
    """The official SDK against a server, strict about every shape it parses."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 120)
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, _strict_response_validation=True, **kwargs
    )


def wait_job(api: httpx.Client, name: str, timeout: float = 180) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/api/v1/jobs/{name}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"{name} did not finish: {job}")


def save_tiny_model(directory: Path, seed: int = 7) -> Path:
    """A base model directory (config, weights, tokenizer) as a user would put one there."""
    from ainfinity.train.tiny_model import build_tiny_random_llama

    model, tokenizer = build_tiny_random_llama(seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def serving_server(tmp: Path, **env: str) -> UvicornServer:
    models = tmp / "models"
    models.mkdir(parents=True, exist_ok=True)
    values = {
        "AINFINITY_API_KEYS": KEYS,
        "AINFINITY_LOCAL_MAX_JOBS": "2",
        "AINFINITY_MODEL_DIRS": str(models),
        "AINFINITY_DATA_DIRS": f"{tmp},{ROOT / 'samples'}",
        "AINFINITY_SERVE_HEALTH_INTERVAL_SECONDS": "0.5",
        **env,
    }
    return UvicornServer(tmp / "home", env=values)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    model_dir = save_tiny_model(tmp / "models" / "house-llama")
    server = serving_server(tmp, AINFINITY_TOKEN_STATS="true")
    with server:
        with server.client(ALICE_KEY) as api:
            for body in (
                job_body(name="full-a", dataset=str(SAMPLE_CHAT), hyperparameters=TRAINING),
                job_body(
                    name="lora-a",
                    dataset=str(SAMPLE_CHAT),
                    method="lora",
                    lora={"r": 8, "alpha": 16},
                    hyperparameters={**TRAINING, "learning_rate": 3e-2},
                ),
            ):
                response = api.post("/api/v1/jobs", json=body)
                assert response.status_code == 202, response.text
            full, lora = wait_job(api, "full-a"), wait_job(api, "lora-a")
        assert full["status"] == "SUCCEEDED" and lora["status"] == "SUCCEEDED", (full, lora)
        yield Served(server, server.home, model_dir, full, lora)
