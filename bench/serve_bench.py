"""Serving through the gateway against the inference worker called directly, in one run.

    .venv/bin/python bench/serve_bench.py [--requests 64] [--tokens 128] [--concurrency 16]

One real `uvicorn ainfinity.api.main:app` (one process) on a free loopback port; its
inference worker is started by the first request and then also called directly on its unix
socket, with the same model, prompt and token counts. Both paths are measured by the same
async client (httpx), rounds alternating between them:

- **throughput**: `--requests` streamed chat completions, `--concurrency` at a time, each
  generating exactly `--tokens` tokens (greedy decoding of the built-in model never reaches
  eos for this prompt); tokens/s = completion tokens (from `usage`) / wall time;
- **time to first token**: from sending a streamed request to its first content chunk, one
  request at a time (`--ttft-requests` each), p50 and p99;
- **API-process RSS** after 100 jobs were created and 2 models loaded (the worker's RSS
  shown beside it);
- **POST /api/v1/jobs**: the first request after start-up against later ones (p50 over
  `--restarts` fresh starts, against the p50 of 50 later requests).

The model is the built-in tiny one: generation costs least there, so the gateway's share of
each token is the largest it gets (a worst case for the ratio). Targets (issue F): tokens/s
≥ 0.95× direct; TTFT p50 adds ≤ 3 ms; RSS ≤ 150 MB; first POST ≤ 1.5× later ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.job_latency import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-serving-key-0123456789"
MODEL = "tiny-random-llama"
SOURCE = {"id": MODEL, "load": MODEL, "seed": 42}  # as the gateway describes it to the worker
PROMPT = [{"role": "user", "content": "Tell me everything."}]
SAMPLES = ROOT / "samples" / "tiny_sft.jsonl"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    home: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve(home: Path) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "AINFINITY_HOME": str(home),
        "AINFINITY_API_KEYS": f"bench:{KEY}",
        "AINFINITY_RATE_LIMIT": "10000000/minute",
        "AINFINITY_LOCAL_MAX_JOBS": "0",
        "AINFINITY_TOKEN_STATS": "false",
        "AINFINITY_MODEL_DIRS": str(home.parent / "models"),
    }
    command = [sys.executable, "-m", "uvicorn", "ainfinity.api.main:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(process, url, home)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no RSS for {pid}")


def chat_body(tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": PROMPT,
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


class Route:
    """One way to the model: the gateway over TCP, or the worker on its unix socket."""

    def __init__(self, name: str, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.name, self.client, self.headers = name, client, headers

    async def stream(self, tokens: int) -> tuple[float, int]:
        """(seconds to the first content chunk, completion tokens) of one streamed chat."""
        began = time.perf_counter()
        first = None
        used = 0
        async with self.client.stream(
            "POST", "/v1/chat/completions", json=chat_body(tokens), headers=self.headers
        ) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if (
                    first is None
                    and chunk["choices"]
                    and chunk["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter() - began
                if chunk.get("usage"):
                    used = chunk["usage"]["completion_tokens"]
        assert first is not None and used == tokens, (first, used)
        return first, used


async def throughput(path: Route, *, requests: int, tokens: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with slots:
            return (await path.stream(tokens))[1]

    began = time.perf_counter()
    total = sum(await asyncio.gather(*(one() for _ in range(requests))))
    return total / (time.perf_counter() - began)


async def ttft(path: Route, *, requests: int) -> list[float]:
    return [(await path.stream(8))[0] for _ in range(requests)]


async def compare(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    socket_path = server.home / "serving" / "worker.sock"
    gateway = httpx.AsyncClient(
        base_url=server.url, timeout=300, limits=httpx.Limits(max_connections=64)
    )
    direct = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
        base_url="http://worker",
        timeout=300,
        limits=httpx.Limits(max_connections=64),
    )
    paths = {
        "gateway": Route("gateway", gateway, {"Authorization": f"Bearer {KEY}"}),
        "direct": Route("direct", direct, {"x-ainfinity-model-source": json.dumps(SOURCE)}),
    }
    async with gateway, direct:
        await paths["gateway"].stream(4)  # starts the worker, loads the model
        for path in paths.values():  # warm both ways
            await throughput(
                path, requests=args.concurrency, tokens=16, concurrency=args.concurrency
            )
        rates: dict[str, list[float]] = {"gateway": [], "direct": []}
        firsts: dict[str, list[float]] = {"gateway": [], "direct": []}
        for round_ in range(args.rounds):
            order = ["gateway", "direct"] if round_ % 2 == 0 else ["direct", "gateway"]
            for name in order:
                rates[name].append(
                    await throughput(
                        paths[name],
                        requests=args.requests,
                        tokens=args.tokens,
                        concurrency=args.concurrency,
                    )
                )
                firsts[name].extend(await ttft(paths[name], requests=args.ttft_requests))
    return {"rates": rates, "firsts": firsts}


def post_latencies(tmp: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """First POST after each fresh start, and 50 later ones (on the last start)."""
    firsts, later = [], []
    body = {"model": MODEL, "dataset": str(SAMPLES)}
    for index in range(args.restarts):
        server = serve(tmp / f"post-home-{index}")
        try:
            with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as api:
                began = time.perf_counter()
                assert api.post("/api/v1/jobs", json=body).status_code == 202
                firsts.append(time.perf_counter() - began)
                if index == args.restarts - 1:
                    for _ in range(50):
                        began = time.perf_counter()
                        assert api.post("/api/v1/jobs", json=body).status_code == 202
                        later.append(time.perf_counter() - began)
        finally:
            server.stop()
    return firsts, later


def memory(tmp: Path) -> tuple[float, float]:
    """(API process RSS, worker RSS) in MB after 100 jobs and 2 loaded models."""
    from ainfinity.train.tiny_model import build_tiny_random_llama

    model, tokenizer = build_tiny_random_llama(3)
    model.save_pretrained(tmp / "models" / "second")
    tokenizer.save_pretrained(tmp / "models" / "second")
    server = serve(tmp / "memory-home")
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as api:
            for _ in range(100):
                body = {"model": MODEL, "dataset": str(SAMPLES)}
                assert api.post("/api/v1/jobs", json=body).status_code == 202
            for model_id in (MODEL, "second"):
                body = {"model": model_id, "messages": PROMPT, "max_tokens": 4}
                assert api.post("/v1/chat/completions", json=body).status_code == 200
            worker = api.get("/api/v1/serving").json()["workers"][0]
            assert len(worker["loaded_models"]) == 2
            return rss_mb(server.process.pid), worker["rss_bytes"] / 2**20
    finally:
        server.stop()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ttft-requests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ainfinity-serve-bench-") as scratch:
        tmp = Path(scratch)
        (tmp / "models").mkdir()
        server = serve(tmp / "home")
        try:
            result = asyncio.run(compare(server, args))
        finally:
            server.stop()
        api_rss, worker_rss = memory(tmp)
        first_posts, later_posts = post_latencies(tmp, args)

    rates, firsts = result["rates"], result["firsts"]
    ratios = [g / d for g, d in zip(rates["gateway"], rates["direct"], strict=True)]
    print(f"streamed chat, {args.requests} requests x {args.tokens} tokens, "
          f"{args.concurrency} at a time, {args.rounds} alternating rounds")  # fmt: skip
    for name in ("direct", "gateway"):
        print(
            f"  {name:8s} tokens/s {statistics.median(rates[name]):8.0f} "
            f"(rounds {', '.join(f'{r:.0f}' for r in rates[name])}); "
            f"TTFT p50 {p(firsts[name], 0.5) * 1000:6.2f} ms "
            f"p99 {p(firsts[name], 0.99) * 1000:6.2f} ms"
        )
    print(f"  gateway / direct tokens/s: {statistics.median(ratios):.3f}x "
          f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.95x)")  # fmt: skip
    added = (p(firsts["gateway"], 0.5) - p(firsts["direct"], 0.5)) * 1000
    print(f"  TTFT p50 added by the gateway: {added:.2f} ms (target <= 3 ms)")
    print(f"API process RSS after 100 jobs and 2 loaded models: {api_rss:.0f} MB "
          f"(target <= 150 MB); the worker: {worker_rss:.0f} MB")  # fmt: skip
    first_p50, later_p50 = statistics.median(first_posts), statistics.median(later_posts)
    print(
        f"POST /api/v1/jobs: first after start-up p50 {first_p50 * 1000:.1f} ms "
        f"({args.restarts} starts), later p50 {later_p50 * 1000:.1f} ms: "
        f"{first_p50 / later_p50:.2f}x (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
