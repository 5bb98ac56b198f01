"""The inference worker under the babysitter: a SIGKILL mid-stream, a client that leaves,
50 streams at once, the LRU of loaded models, the admission queue, and an API process
that never imports torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.builders import API_KEY, ROOT, wait_until
from tests.servers import UvicornServer
from tests.serving.conftest import ALICE_KEY, save_tiny_model, sdk_client, serving_server

pytestmark = pytest.mark.timeout(300)

PROMPT = [{"role": "user", "content": "Tell me everything."}]
# The built-in's greedy answer to PROMPT never reaches eos: a stream of this length takes
# seconds, time enough to act in the middle of it.
LONG = 1900


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    tmp = tmp_path_factory.mktemp("supervision")
    save_tiny_model(tmp / "models" / "house-a", seed=1)
    save_tiny_model(tmp / "models" / "house-b", seed=2)
    with serving_server(tmp) as running:
        yield running


def serving(server: UvicornServer) -> dict[str, Any]:
    with server.client(API_KEY) as api:
        return api.get("/api/v1/serving").json()["workers"][0]  # type: ignore[no-any-return]


def ready_pid(server: UvicornServer, *, not_pid: int | None = None) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker = serving(server)
        if worker["status"] == "ready" and worker["pid"] and worker["pid"] != not_pid:
            return int(worker["pid"])
        time.sleep(0.1)
    raise AssertionError(f"the worker is not ready: {serving(server)}")


def long_stream(server: UvicornServer) -> Any:
    return sdk_client(server).chat.completions.create(
        model="tiny-random-llama", messages=PROMPT, temperature=0, max_tokens=LONG, stream=True
    )


def test_a_worker_killed_mid_stream_fails_the_stream_fast_and_is_restarted(
    server: UvicornServer,
) -> None:
    sdk_client(server).chat.completions.create(
        model="tiny-random-llama", messages=PROMPT, max_tokens=1
    )
    pid = ready_pid(server)
    restarts = serving(server)["restarts"]
    stream = long_stream(server)
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for _chunk in stream:
            received += 1
            if received == 5:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
    failed_after = time.monotonic() - killed_at

    assert failed_after < 2.0, failed_after
    assert caught.value.code == "worker_unavailable"
    ready_pid(server, not_pid=pid)
    worker = serving(server)
    assert worker["restarts"] == restarts + 1
    assert worker["crashes"][-1]["reason"] == "killed by SIGKILL"
    answer = sdk_client(server).chat.completions.create(
        model="tiny-random-llama", messages=PROMPT, max_tokens=3
    )
    assert answer.choices[0].message.content is not None


def test_a_client_that_leaves_stops_generation(server: UvicornServer) -> None:
    ready_pid(server)
    before = serving(server)["tokens_generated"]
    body = {
        "model": "tiny-random-llama",
        "messages": PROMPT,
        "temperature": 0,
        "max_tokens": LONG,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        lines = response.iter_lines()
        data = [line for line, _ in zip(lines, range(10), strict=False) if line.startswith("data:")]
        assert data  # it streams...
    # ...and the connection is gone: the count settles well before LONG tokens.
    settled = []

    def settled_count() -> bool:
        settled.append(serving(server)["tokens_generated"])
        return len(settled) >= 3 and settled[-1] == settled[-3]

    wait_until(settled_count, timeout=20, every=0.3)
    assert settled[-1] - before < LONG / 2, (before, settled)
    assert serving(server)["in_flight"] == 0


def test_fifty_concurrent_streams_all_complete(server: UvicornServer) -> None:
    async def chat(client: openai.AsyncOpenAI, index: int) -> str:
        stream = await client.chat.completions.create(
            model="tiny-random-llama",
            messages=[{"role": "user", "content": f"Question {index % 5}"}],
            temperature=0,
            max_tokens=16,
            stream=True,
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    async def all_of_them() -> list[str]:
        import asyncio

        client = openai.AsyncOpenAI(
            base_url=f"{server.url}/v1",
            api_key=ALICE_KEY,
            _strict_response_validation=True,
            max_retries=0,
            timeout=120,
        )
        async with client:
            return await asyncio.gather(*(chat(client, i) for i in range(50)))

    import asyncio

    answers = asyncio.run(all_of_them())

    assert len(answers) == 50
    # Greedy: the same question gets the same answer, however many run beside it.
    for index, answer in enumerate(answers):
        assert answer == answers[index % 5]


def test_least_recently_used_model_is_evicted_and_reloaded(server: UvicornServer) -> None:
    sdk = sdk_client(server)

    def call(model: str) -> None:
        sdk.chat.completions.create(model=model, messages=PROMPT, max_tokens=1)

    def loaded() -> dict[str, str]:
        return {m["id"]: m["loaded_at"] for m in serving(server)["loaded_models"]}

    for model in ("tiny-random-llama", "house-a", "house-b"):
        call(model)
    first = loaded()
    assert set(first) == {"house-a", "house-b"}

    call("tiny-random-llama")

    second = loaded()
    assert set(second) == {"house-b", "tiny-random-llama"}
    assert second["house-b"] == first["house-b"]
    call("house-a")
    assert loaded()["house-a"] > first["house-a"]  # loaded again, on demand


def test_past_the_queue_requests_get_429_with_retry_after(tmp_path: Path) -> None:
    server = serving_server(
        tmp_path, AINFINITY_SERVE_MAX_CONCURRENCY="1", AINFINITY_SERVE_MAX_QUEUE="1"
    )
    with server:
        sdk_client(server).chat.completions.create(
            model="tiny-random-llama", messages=PROMPT, max_tokens=1
        )
        first = long_stream(server)
        next(iter(first))  # generating: the one slot is taken
        queued: list[Any] = []
        waiter = threading.Thread(
            target=lambda: queued.append(
                sdk_client(server).chat.completions.create(
                    model="tiny-random-llama", messages=PROMPT, max_tokens=2
                )
            )
        )
        waiter.start()
        wait_until(lambda: serving_status(server)["queued_requests"] == 1, timeout=10)

        with pytest.raises(openai.RateLimitError) as caught:
            sdk_client(server).chat.completions.create(
                model="tiny-random-llama", messages=PROMPT, max_tokens=2
            )

        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.code == "server_busy"
        first.close()  # the slot frees, and the queued request goes through
        waiter.join(timeout=60)
        assert queued and queued[0].choices[0].message.content is not None

        # Clients that leave at any moment, even before the first chunk, give their slot back.
        for read in (0, 0, 1, 3):
            stream = long_stream(server)
            for _, _chunk in zip(range(read), stream, strict=False):
                pass
            stream.close()
        wait_until(lambda: serving_status(server)["active_requests"] == 0, timeout=10)
        answer = sdk_client(server).chat.completions.create(
            model="tiny-random-llama", messages=PROMPT, max_tokens=2
        )
        assert answer.choices[0].finish_reason in ("stop", "length")


def serving_status(server: UvicornServer) -> dict[str, Any]:
    with server.client(API_KEY) as api:
        return api.get("/api/v1/serving").json()  # type: ignore[no-any-return]


def test_the_api_process_never_imports_torch_or_transformers(tmp_path: Path) -> None:
    script = f"""
import json, sys
from pydantic import SecretStr
from fastapi.testclient import TestClient
from ainfinity.api.main import create_app
from ainfinity.core.config import Settings

settings = Settings(
    _env_file=None, home={str(tmp_path / "home")!r}, api_keys=SecretStr("t:{API_KEY}"),
    local_max_jobs=0, data_dirs=[{str(ROOT / "samples")!r}],
)
with TestClient(create_app(settings), headers={{"X-API-Key": "{API_KEY}"}}) as client:
    job = client.post("/api/v1/jobs", json={{
        "name": "tokens", "model": "tiny-random-llama",
        "dataset": {str(ROOT / "samples" / "tiny_chat.jsonl")!r},
    }})
    assert job.status_code == 202, job.text
    answer = client.post("/v1/chat/completions", json={{
        "model": "tiny-random-llama", "messages": [{{"role": "user", "content": "hi"}}],
        "max_tokens": 3,
    }})
    assert answer.status_code == 200, answer.text
    for _ in range(100):
        stats = client.get("/api/v1/jobs/tokens").json()["dataset_stats"]
        if stats["token_stats"] != "pending":
            break
        import time; time.sleep(0.1)
    print(json.dumps({{
        "stats": stats["token_stats"],
        "loaded": sorted(m for m in ("torch", "transformers", "peft", "tokenizers")
                         if m in sys.modules),
    }}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINFINITY_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["stats"] == "measured"  # the worker measured the dataset in tokens...
    assert report["loaded"] == []  # ...and served the model, while this process imported none
