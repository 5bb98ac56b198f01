"""Rate limits under a real `uvicorn --workers 4`: exact across workers with a shared
redis-server (`AINFINITY_RATE_LIMIT_STORAGE=redis://...`), per worker with the default
in-memory storage, as docs/ARCHITECTURE.md says.

Every request goes out on a fresh connection at the same moment, so the workers share
them; the server log names the worker that answered each one (`UvicornServer.served_by`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.builders import API_KEY
from tests.servers import UvicornServer, redis_server

pytestmark = pytest.mark.timeout(120)

WORKERS = 4
LIMIT = 30
# An hour-long window: all requests land in one window, whenever the test runs.
RATE = f"{LIMIT}/hour"
REQUESTS = 2 * LIMIT
PROBE = "/api/v1/jobs?limit=1"


def burst(server: UvicornServer, count: int) -> list[httpx.Response]:
    """`count` GETs with one key, each on its own connection, released together."""
    start = threading.Barrier(count)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}) as client:
            start.wait(timeout=30)
            return client.get(PROBE, timeout=60)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


def check_refusals(responses: list[httpx.Response]) -> None:
    for response in responses:
        if response.status_code == 429:
            assert response.json()["detail"]["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["X-RateLimit-Remaining"] == "0"
        else:
            assert response.status_code == 200, response.text
            assert response.headers["X-RateLimit-Limit"] == str(LIMIT)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as url:
        yield url


def test_redis_storage_makes_the_limit_exact_across_workers(tmp_path: Path, redis_url: str) -> None:
    env = {"AINFINITY_RATE_LIMIT": RATE, "AINFINITY_RATE_LIMIT_STORAGE": redis_url}
    with UvicornServer(tmp_path / "home", workers=WORKERS, env=env) as server:
        responses = burst(server, REQUESTS)
        served = server.served_by(PROBE)

    counts = statuses(responses)
    check_refusals(responses)
    assert counts == {200: LIMIT, 429: REQUESTS - LIMIT}, (counts, served)
    assert sum(served.values()) == REQUESTS
    # The requests really were shared: per-worker counters would have let more through.
    assert len(served) >= 2, served
    assert sum(min(n, LIMIT) for n in served.values()) > LIMIT, served
    # The counter lives in redis: one key for the API key's window, hit by every request.
    store = redis.Redis.from_url(redis_url)
    [key] = store.keys("LIMITS:*")
    assert b"key:tester" in key
    assert int(store.get(key) or 0) == REQUESTS
    assert 0 < store.ttl(key) <= 3600


def test_memory_storage_counts_per_worker(tmp_path: Path) -> None:
    env = {"AINFINITY_RATE_LIMIT": RATE, "AINFINITY_RATE_LIMIT_STORAGE": "memory://"}
    with UvicornServer(tmp_path / "home", workers=WORKERS, env=env) as server:
        responses = burst(server, REQUESTS)
        served = server.served_by(PROBE)

    counts = statuses(responses)
    check_refusals(responses)
    assert sum(served.values()) == REQUESTS
    assert len(served) >= 2, served
    # Each worker grants its own LIMIT: exactly what each one saw, up to LIMIT, passes.
    assert counts[200] == sum(min(n, LIMIT) for n in served.values()), (counts, served)
    assert LIMIT < counts[200] <= WORKERS * LIMIT
    assert counts[200] + counts[429] == REQUESTS


def test_unreachable_redis_is_a_coded_503_that_never_stalls_the_worker(tmp_path: Path) -> None:
    # A listener that accepts connections (the kernel does) and never answers: a hung redis.
    with socket.socket() as tarpit:
        tarpit.bind(("127.0.0.1", 0))
        tarpit.listen(64)
        hung = f"redis://127.0.0.1:{tarpit.getsockname()[1]}/0"
        env = {"AINFINITY_RATE_LIMIT_STORAGE": hung}
        with UvicornServer(tmp_path / "home", workers=1, env=env) as server:
            with ThreadPoolExecutor(max_workers=1) as pool, server.client() as client:
                started = time.monotonic()
                pending = pool.submit(client.get, PROBE)
                time.sleep(0.5)
                # The worker's event loop is free while the API request waits on redis.
                health = httpx.get(f"{server.url}/health", timeout=5)
                health_after = time.monotonic() - started
                response = pending.result(timeout=60)
                waited = time.monotonic() - started
                # Same connection: the 503 left it open, nothing blew up.
                assert client.get("/health").status_code == 200
    assert health.status_code == 200 and health_after < 2.0, health_after
    assert response.status_code == 503, response.text
    assert response.json()["detail"]["code"] == "rate_limit_unavailable"
    assert response.headers["Retry-After"] == "5"
    print(f"\nhung redis: 503 after {waited:.1f} s, /health answered after {health_after:.2f} s")
