"""`/metrics`: Prometheus text exposition of requests (by route template), latency, jobs by
status and executor, and launch latency, scraped over HTTP and parsed with
prometheus_client's own parser; and the sum over workers under `ainfinity serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, ROOT, job_body, wait_for
from tests.conftest import MakeSettings
from tests.servers import free_port, server_env

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient | httpx.Client, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_for(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(
        samples, "ainfinity_http_requests_total", method=method, route=route, status=status
    )


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert client.get(f"/api/v1/jobs/{name}").status_code == 404
    assert client.get("/api/v1/jobs/alpha/logs").status_code == 404
    assert client.post("/api/v1/jobs", json=job_body(name="counted")).status_code == 202
    assert client.get("/api/v1/jobs").status_code == 200
    assert (
        client.get("/api/v1/jobs", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    )
    for path in ("/no/such/page", "/another-random-path"):
        assert client.get(path).status_code == 404

    samples = scrape(client)
    assert requests_for(samples, "/api/v1/jobs/{name}", "404") == 3
    assert requests_for(samples, "/api/v1/jobs/{name}/logs", "404") == 1
    assert requests_for(samples, "/api/v1/jobs", "202", method="POST") == 1
    assert requests_for(samples, "/api/v1/jobs", "200") == 1
    assert requests_for(samples, "/api/v1/jobs", "401") == 1
    assert requests_for(samples, "unmatched", "404") == 2
    # Bounded cardinality: no label ever holds a job name or a probed path.
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not {r for r in routes if r and ("alpha" in r or "random" in r or "/no/" in r)}

    count = value(
        samples,
        "ainfinity_http_request_duration_seconds_count",
        method="GET",
        route="/api/v1/jobs/{name}",
    )
    assert count == 3
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "ainfinity_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/api/v1/jobs/{name}"
    )
    assert buckets[-1] == (float("inf"), 3)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)

    assert value(samples, "ainfinity_jobs", status="PENDING", executor="local") == 1
    assert value(samples, "ainfinity_jobs", status="RUNNING", executor="local") == 0
    assert (
        samples.get(
            ("ainfinity_jobs", frozenset({("status", "PENDING"), ("executor", "skypilot")}))
        )
    ) == 0

    # The scrape itself is counted, under its own route.
    again = scrape(client)
    assert requests_for(again, "/metrics", "200") == 1
    assert value(again, "ainfinity_http_requests_in_progress") == 1  # the scrape


def test_metrics_need_no_key_and_no_rate_limit_budget(make_settings: MakeSettings) -> None:
    settings = make_settings(rate_limit="2/minute")
    with TestClient(create_app(settings)) as anonymous:
        for _ in range(2):
            assert anonymous.get("/api/v1/jobs").status_code == 401
        assert anonymous.get("/api/v1/jobs").status_code == 429
        for _ in range(5):
            samples = scrape(anonymous)
    # A 429 is answered before routing: it has no route to name.
    assert requests_for(samples, "unmatched", "429") == 1
    assert requests_for(samples, "/metrics", "200") == 4


def test_metrics_key_can_be_required(make_settings: MakeSettings) -> None:
    settings = make_settings(metrics_require_key=True)
    with TestClient(create_app(settings)) as app_client:
        refused = app_client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["detail"]["code"] == "unauthorized"
        assert scrape(app_client, **{"X-API-Key": API_KEY})


def test_launch_latency_and_job_counts_follow_a_real_job(
    runner: TestClient, runner_settings: Settings
) -> None:
    body = job_body(name="latency")
    body["hyperparameters"]["max_steps"] = 5000  # runs until cancelled
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    job = wait_for(runner, "latency", {"RUNNING", "SUCCEEDED", "FAILED"})
    assert job["status"] == "RUNNING", job

    samples = scrape(runner)
    assert value(samples, "ainfinity_jobs", status="RUNNING", executor="local") == 1
    assert value(samples, "ainfinity_jobs", status="PENDING", executor="local") == 0
    starting = {"executor": "local", "stage": "starting"}
    running = {"executor": "local", "stage": "running"}
    assert value(samples, "ainfinity_job_launch_seconds_count", **starting) == 1
    assert value(samples, "ainfinity_job_launch_seconds_count", **running) == 1
    to_running = datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(
        job["created_at"]
    )
    assert value(samples, "ainfinity_job_launch_seconds_sum", **running) == pytest.approx(
        to_running.total_seconds(), abs=1e-3
    )
    to_starting = value(samples, "ainfinity_job_launch_seconds_sum", **starting)
    assert 0 < to_starting <= to_running.total_seconds()

    assert runner.post("/api/v1/jobs/latency/cancel").status_code == 202
    assert wait_for(runner, "latency", {"CANCELLED", "FAILED"})["status"] == "CANCELLED"
    samples = scrape(runner)
    assert value(samples, "ainfinity_jobs", status="CANCELLED", executor="local") == 1
    assert value(samples, "ainfinity_jobs", status="RUNNING", executor="local") == 0
    # Observed once per job, however many reconcile passes saw it afterwards.
    assert value(samples, "ainfinity_job_launch_seconds_count", **running) == 1


# -- several workers under `ainfinity serve` -------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m ainfinity serve` with two workers; yields its URL and metrics directory."""
    home = tmp_path / "home"
    directory = home / "prometheus"
    directory.mkdir(parents=True)
    # What an earlier run left behind: it must not count in this one.
    stale = MmapedDict(str(directory / "counter_999999.db"))
    labels = ["method", "route", "status"]
    stale.write_value(
        mmap_key(
            "ainfinity_http_requests",
            "ainfinity_http_requests_total",
            labels,
            ["GET", "/health", "200"],
            "x",
        ),
        1000.0,
        0.0,
    )
    stale.close()
    port = free_port()
    env = server_env(home, AINFINITY_PORT=str(port), AINFINITY_WORKERS="2")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ainfinity", "serve"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, "ainfinity serve exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("ainfinity serve did not start")
        yield url, directory
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def per_worker(directory: Path, route: str) -> dict[int, float]:
    """Each worker's own count of GETs of `route` answered 404, from its file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("route") == route:
                    counts[pid] = counts.get(pid, 0.0) + sample.value
    return counts


def get_many(url: str, path: str, count: int) -> None:
    def one(_: int) -> int:
        # A connection each, sent together: the two workers share them.
        return httpx.get(url + path, headers={"X-API-Key": API_KEY}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(count))) == {404}


def test_serve_with_two_workers_sums_every_workers_counts(served: tuple[str, Path]) -> None:
    url, directory = served
    route = "/api/v1/jobs/{name}"
    sent = 0
    for _ in range(10):
        get_many(url, "/api/v1/jobs/nobody", 24)
        sent += 24
        if len(per_worker(directory, route)) >= 2:
            break
    split = per_worker(directory, route)
    assert len(split) == 2 and sum(split.values()) == sent, split
    assert not (directory / "counter_999999.db").exists()

    # Whichever worker answers the scrape, it reports the sum of both.
    for _ in range(6):
        with httpx.Client(base_url=url) as fresh:
            samples = scrape(fresh)
        assert requests_for(samples, route, "404") == sent
        assert requests_for(samples, "/health", "200") < 1000

    # A worker killed outright: its counts stay in the sum (totals never go back), and its
    # in-progress gauge leaves it at the next scrape.
    victim = max(split, key=lambda pid: split[pid])
    assert (directory / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(victim, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with httpx.Client(base_url=url) as fresh:
        samples = scrape(fresh)
    assert requests_for(samples, route, "404") == sent
    assert not (directory / f"gauge_livesum_{victim}.db").exists()
    assert value(samples, "ainfinity_http_requests_in_progress") == 1  # the scrape
