"""How long the README's quickstart job takes through the control plane, against the
same training run launched by hand, measured in one run.

    .venv/bin/python bench/job_latency.py [--runs 3] [--max-steps 60]

It serves the real app with uvicorn on a free loopback port (its own temporary home),
POSTs the quickstart job and polls it over HTTP, recording POST → RUNNING,
POST → first metric and POST → SUCCEEDED. The baseline runs
`python -m ainfinity.train.finetune` on the same config directly. The ratio
(control plane / direct) is the control plane's overhead on a whole job.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"


def quickstart_body(name: str, max_steps: int) -> dict[str, object]:
    return {
        "name": name,
        "model": "tiny-random-llama",
        "dataset": str(ROOT / "samples" / "tiny_sft.jsonl"),
        "hyperparameters": {
            "max_steps": max_steps,
            "batch_size": 8,
            "learning_rate": 0.003,
            "max_seq_length": 128,
            "logging_steps": 5,
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AINFINITY_HOME": str(home),
        "AINFINITY_API_KEYS": f"bench:{KEY}",
        "AINFINITY_PORT": str(port),
        # Polling every 50 ms would exceed the default 120/minute budget.
        "AINFINITY_RATE_LIMIT": "100000/minute",
        "AINFINITY_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "ainfinity", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not come up in 30 s")


def through_control_plane(client: httpx.Client, name: str, max_steps: int) -> dict[str, float]:
    started = time.perf_counter()
    response = client.post("/api/v1/jobs", json=quickstart_body(name, max_steps))
    response.raise_for_status()
    accepted = time.perf_counter() - started
    marks: dict[str, float] = {"accept": accepted}
    while True:
        response = client.get(f"/api/v1/jobs/{name}")
        response.raise_for_status()
        job = response.json()
        now = time.perf_counter() - started
        if job["status"] == "RUNNING":
            marks.setdefault("running", now)
        if job["progress"] is not None:
            marks.setdefault("first_metric", now)
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if job["status"] != "SUCCEEDED":
                raise RuntimeError(f"{name} ended {job['status']}: {job['failure_reason']}")
            marks.setdefault("running", now)
            marks["succeeded"] = now
            return marks
        time.sleep(0.05)


def direct(tmp: Path, index: int, max_steps: int) -> float:
    body = quickstart_body(f"direct-{index}", max_steps)
    config = {
        **body,
        "output_dir": str(tmp / f"direct-{index}"),
        "deepspeed": {"zero_stage": 2, "offload": False},
    }
    path = tmp / f"direct-{index}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ainfinity.train.finetune", "--config", str(path)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ainfinity-bench-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        server = start_server(tmp / "home", port)
        plane: list[dict[str, float]] = []
        baseline: list[float] = []
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=30
            ) as client:
                # Interleave the two so that machine noise hits both alike.
                for i in range(args.runs):
                    plane.append(through_control_plane(client, f"bench-{i}", args.max_steps))
                    baseline.append(direct(tmp, i, args.max_steps))
        finally:
            server.terminate()
            server.wait(timeout=30)

    def median(key: str) -> float:
        return statistics.median(run[key] for run in plane)

    direct_s = statistics.median(baseline)
    print(f"quickstart job, {args.max_steps} steps, median of {args.runs} runs")
    print(f"{'measure':<36}{'seconds':>10}")
    print(f"{'POST answered (202)':<36}{median('accept'):>10.3f}")
    print(f"{'POST -> RUNNING':<36}{median('running'):>10.2f}")
    print(f"{'POST -> first metric':<36}{median('first_metric'):>10.2f}")
    print(f"{'POST -> SUCCEEDED':<36}{median('succeeded'):>10.2f}")
    print(f"{'baseline: trainer run directly':<36}{direct_s:>10.2f}")
    print(
        f"ratio SUCCEEDED / direct: {median('succeeded') / direct_s:.2f}x "
        f"(control-plane overhead {median('succeeded') - direct_s:+.2f} s)"
    )


if __name__ == "__main__":
    main()
