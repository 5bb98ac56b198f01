"""The API under load, against a bare FastAPI app served the same way, in one run.

    .venv/bin/python bench/api_bench.py [--jobs 100000] [--duration 10] [--connections 16]

Each server is a real `uvicorn` (one worker) on a free loopback port; `wrk` (Debian's
package) is the load generator for req/s, and a separate client process measures
request latencies one at a time. It reports:

- authenticated `GET /api/v1/jobs/{name}` through every middleware (auth, rate limit,
  body limit, CORS, request logging) vs the bare app's same route: req/s, p50, p99;
- `POST /api/v1/jobs` accept latency with 100 vs `--jobs` jobs stored (p50, p99);
- the first page of `GET /api/v1/jobs?limit=50` with 100 and `--jobs` jobs stored, for an
  admin key (all jobs) and a user key (own jobs only);
- how long the server took to start on the big store with no list index (a rebuild).

The big store is made by cloning a job that the real API accepted, written straight to
disk (no fsync), then the index file is removed so the server rebuilds it from records.
Targets (issue D): GET ≥ 0.6× bare req/s; POST p50 ratio ≤ 1.5×; list p50 ≤ 20 ms. The GET
figures are medians over `--rounds` alternating wrk runs of the two servers, and the ratio
the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.job_latency import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-0123456789"
USER_KEY = "bench-user-key-0123456789ab"
KEYS = f"ops:{ADMIN_KEY}:admin,alice:{USER_KEY}:user"
OWNERS = ("ops", "alice", "bob", "carol")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    started_in: float

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve(app: str, env: dict[str, str]) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    began = time.monotonic()
    process = subprocess.Popen(
        [*command, "--no-access-log"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = began + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{app} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code in (200, 404):
                return Server(process, url, time.monotonic() - began)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{app} did not come up")


def ours(home: Path) -> Server:
    return serve(
        "ainfinity.api.main:app",
        {
            "AINFINITY_HOME": str(home),
            "AINFINITY_API_KEYS": KEYS,
            # Limited, so the middleware does its work, but never reached by the load.
            "AINFINITY_RATE_LIMIT": "1000000000/minute",
            "AINFINITY_LOCAL_MAX_JOBS": "0",
            "AINFINITY_DATA_DIRS": str(ROOT / "samples"),
        },
    )


def job_body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "model": "tiny-random-llama",
        "dataset": str(ROOT / "samples" / "tiny_sft.jsonl"),
        "hyperparameters": {"max_steps": 10, "max_seq_length": 128},
    }


def seed(home: Path, count: int) -> Path:
    """`count` finished jobs cloned from one the API accepted; returns that job's file."""
    server = ours(home)
    try:
        answer = httpx.post(
            f"{server.url}/api/v1/jobs",
            json=job_body("seed-template"),
            headers={"X-API-Key": ADMIN_KEY},
            timeout=120,
        )
        answer.raise_for_status()
    finally:
        server.stop()
    template_dir = home / "jobs" / "seed-template"
    record = json.loads((template_dir / "job.json").read_text())
    events = (template_dir / "events.jsonl").read_bytes()
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        name = f"seed-{i:06d}"
        moment = (base + timedelta(seconds=i)).isoformat()
        record.update(
            name=name,
            status="SUCCEEDED",
            owner=OWNERS[i % len(OWNERS)],
            created_at=moment,
            updated_at=moment,
            finished_at=moment,
        )
        record["spec"]["name"] = name
        directory = home / "jobs" / name
        directory.mkdir()
        (directory / "job.json").write_text(json.dumps(record))
        (directory / "events.jsonl").write_bytes(events)
    shutil.copy(template_dir / "job.json", home / "template.json")
    shutil.rmtree(template_dir)
    (home / "active" / "seed-template").unlink(missing_ok=True)
    for path in home.glob("index.sqlite3*"):
        path.unlink()
    return home / "template.json"


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, key: str | None, duration: int, connections: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if key:
        command += ["-H", f"X-API-Key: {key}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _UNIT_MS[u] for p, v, u in _WRK_LATENCY.findall(out)}
    return {"rps": rps, "p50": latency["50"], "p99": latency["99"]}


def timed(client: httpx.Client, count: int, request: object) -> dict[str, float]:
    """Latency of `count` requests made one at a time, in ms."""
    samples = []
    for i in range(count):
        began = time.perf_counter()
        response = request(client, i)  # type: ignore[operator]
        samples.append((time.perf_counter() - began) * 1000)
        if response.status_code >= 300:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def store_figures(server: Server, label: str, posts: int, lists: int) -> dict[str, dict]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        admin = {"X-API-Key": ADMIN_KEY}
        user = {"X-API-Key": USER_KEY}
        # Warm up: the first POST of a process imports the tokenizer stack.
        for i in range(5):
            client.post("/api/v1/jobs", json=job_body(f"warm-{label}-{i}"), headers=admin)
        return {
            "post": timed(
                client,
                posts,
                lambda c, i: c.post("/api/v1/jobs", json=job_body(f"b-{label}-{i}"), headers=admin),
            ),
            "list_admin": timed(
                client, lists, lambda c, i: c.get("/api/v1/jobs?limit=50", headers=admin)
            ),
            "list_user": timed(
                client, lists, lambda c, i: c.get("/api/v1/jobs?limit=50", headers=user)
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server, alternated")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--lists", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="ainfinity-apibench-") as tmp:
        small_home, big_home = Path(tmp, "small"), Path(tmp, "big")
        began = time.monotonic()
        seed(small_home, 100)
        template = seed(big_home, args.jobs)
        print(f"seeded {args.jobs} + 100 jobs in {time.monotonic() - began:.0f} s", flush=True)

        small = ours(small_home)
        try:
            small_figures = store_figures(small, "small", args.posts, args.lists)
        finally:
            small.stop()

        big = ours(big_home)
        bare = None
        try:
            big_figures = store_figures(big, "big", args.posts, args.lists)
            bare = serve("bench.api_bare:app", {"AINFINITY_BENCH_JOB": str(template)})
            # Alternating rounds, so that a noisy neighbour slows both sides alike.
            rounds = []
            for _ in range(args.rounds):
                path = "/api/v1/jobs/seed-000042"
                got_bare = wrk(bare.url + path, None, args.duration, args.connections)
                got_ours = wrk(big.url + path, ADMIN_KEY, args.duration, args.connections)
                rounds.append((got_bare, got_ours))
        finally:
            big.stop()
            if bare is not None:
                bare.stop()

    report(args, big.started_in, small_figures, big_figures, rounds)


def report(
    args: argparse.Namespace,
    big_start: float,
    small: dict[str, dict],
    big: dict[str, dict],
    rounds: list[tuple[dict[str, float], dict[str, float]]],
) -> None:
    def median_of(side: int, figure: str) -> float:
        return statistics.median(r[side][figure] for r in rounds)

    get_bare = {f: median_of(0, f) for f in ("rps", "p50", "p99")}
    get_ours = {f: median_of(1, f) for f in ("rps", "p50", "p99")}
    ratios = [ours["rps"] / bare["rps"] for bare, ours in rounds]
    n = f"{args.jobs:,}"
    print(f"\nserver start on {n} jobs with no index (rebuilt from records): {big_start:.1f} s\n")
    print("| measure | req/s | p50 (ms) | p99 (ms) |")
    print("| --- | ---: | ---: | ---: |")
    row = "| {} | {} | {:.2f} | {:.2f} |"
    for what, got in (("bare FastAPI", get_bare), ("ainfinity (all middleware)", get_ours)):
        print(
            row.format(f"GET /jobs/{{name}}, {what}", f"{got['rps']:,.0f}", got["p50"], got["p99"])
        )
    for label, figures in (("100", small), (n, big)):
        for key, what in (
            ("post", "POST /jobs accept"),
            ("list_admin", "GET /jobs?limit=50, admin"),
            ("list_user", "GET /jobs?limit=50, user"),
        ):
            f = figures[key]
            print(row.format(f"{what}, {label} jobs stored", "", f["p50"], f["p99"]))
    get_ratio = statistics.median(ratios)
    post_ratio = big["post"]["p50"] / small["post"]["p50"]
    list_p50 = max(big["list_admin"]["p50"], big["list_user"]["p50"])
    print()
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"GET req/s, ainfinity / bare: {get_ratio:.2f}x, median of rounds {each} (target >= 0.6x)"
    )
    print(f"POST accept p50, {n} / 100 jobs: {post_ratio:.2f}x (target <= 1.5x)")
    print(f"GET /jobs first page p50 at {n} jobs: {list_p50:.1f} ms (target <= 20 ms)")
    met = get_ratio >= 0.6 and post_ratio <= 1.5 and list_p50 <= 20
    print("targets met" if met else "TARGETS NOT MET")


if __name__ == "__main__":
    main()
