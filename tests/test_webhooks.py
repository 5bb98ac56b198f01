"""Webhooks, delivered to a real HTTP receiver on loopback: signed, retried with back-off,
recorded as job events, sent once per job across workers and resumed after a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from tests.builders import API_KEY, job_body, wait_until
from tests.conftest import MakeSettings
from tests.servers import UvicornServer
from tests.sse import read_all, read_until

pytestmark = pytest.mark.timeout(180)

SECRET = "whsec-test-0123456789"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def job(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """Records every POST; answers 500 to the first `fail_first` of them, after `delay`."""

    url: str = ""
    fail_first: int = 0
    delay: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_job(self, name: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.job["name"] == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(state.delay)
            with state.lock:
                state.deliveries.append(
                    Delivery(self.path, dict(self.headers.items()), body, time.monotonic())
                )
                failing = len(state.deliveries) <= state.fail_first
            if self.path == "/elsewhere":
                # Another host for the same server: 127.0.0.1 vs localhost.
                self.send_response(307)
                port = state.url.rsplit(":", 1)[1]
                self.send_header("Location", f"http://localhost:{port}/hook")
            elif self.path == "/moved":
                self.send_response(307)
                self.send_header("Location", "/hook")
            else:
                self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def webhook_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("webhook_")]


def test_signed_retried_with_backoff_and_recorded(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    settings = make_settings(
        webhook_secret=SecretStr(SECRET), webhook_backoff_seconds=0.3, webhook_max_attempts=4
    )
    receiver.fail_first = 2
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        body = job_body(name="hooked", webhook_url=f"{receiver.url}/hook")
        created = client.post("/api/v1/jobs", json=body)
        assert created.status_code == 202
        assert created.json()["spec"]["webhook_url"] == f"{receiver.url}/hook"
        with client.stream("GET", "/api/v1/jobs/hooked/events/stream") as response:
            lines = response.iter_lines()
            streamed = read_until(lines, lambda got: len(got) == 1)  # "created"
            time.sleep(0.6)
            assert receiver.deliveries == []  # nothing before the job ends
            assert client.post("/api/v1/jobs/hooked/cancel").status_code == 202
            # The job's stream carries the attempts too, and ends once one succeeded.
            streamed += read_all(lines)
        time.sleep(1.5)  # time for a stray second delivery to show up
        job = client.get("/api/v1/jobs/hooked").json()
        events = client.get("/api/v1/jobs/hooked/events").json()["data"]
    assert [m.json["event"] for m in streamed] == events
    assert events[-1]["type"] == "webhook_delivered"

    attempts = receiver.for_job("hooked")
    assert len(attempts) == 3
    assert [d.path for d in attempts] == ["/hook"] * 3
    for number, delivery in enumerate(attempts, start=1):
        # The signature is the HMAC of the exact bytes received.
        expected = "sha256=" + hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["X-Ainfinity-Signature"] == expected
        assert delivery.headers["X-Ainfinity-Event"] == "job.cancelled"
        assert delivery.headers["X-Ainfinity-Attempt"] == str(number)
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.job == job
    assert len({d.headers["X-Ainfinity-Delivery"] for d in attempts}) == 1
    assert len({d.body for d in attempts}) == 1
    # Back-off: 0.3 s after the first failure, 0.6 s after the second.
    assert attempts[1].at - attempts[0].at >= 0.3
    assert attempts[2].at - attempts[1].at >= 0.6

    recorded = webhook_events(events)
    assert [e["type"] for e in recorded] == [
        "webhook_failed",
        "webhook_failed",
        "webhook_delivered",
    ]
    assert "HTTP 500" in recorded[0]["message"] and "retrying in 0.3 s" in recorded[0]["message"]
    assert "retrying in 0.6 s" in recorded[1]["message"]
    assert "HTTP 204" in recorded[2]["message"] and "attempt 3" in recorded[2]["message"]
    assert all(e["status"] == "CANCELLED" and e["actor"] == "system" for e in recorded)
    # The URL's path (it may hold a token) stays out of the events.
    assert all("/hook" not in e["message"] for e in recorded)


def test_unsigned_without_a_secret_and_given_up_after_the_last_attempt(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    settings = make_settings(webhook_backoff_seconds=0.1, webhook_max_attempts=2)
    receiver.fail_first = 1000
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.post("/api/v1/jobs", json=job_body(name="refused", webhook_url=receiver.url))
        client.post("/api/v1/jobs/refused/cancel")

        def events() -> list[dict[str, Any]]:
            return webhook_events(client.get("/api/v1/jobs/refused/events").json()["data"])

        wait_until(lambda: len(events()) == 2, timeout=30)
        time.sleep(1.0)
        recorded = events()
    assert len(receiver.for_job("refused")) == 2
    assert all("X-Ainfinity-Signature" not in d.headers for d in receiver.deliveries)
    assert [e["type"] for e in recorded] == ["webhook_failed", "webhook_failed"]
    assert recorded[-1]["message"].endswith("(attempt 2 of 2); giving up")


def test_redirects_are_followed_to_the_same_host_only(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    settings = make_settings(webhook_max_attempts=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        for name, path in (("moved", "/moved"), ("elsewhere", "/elsewhere")):
            body = job_body(name=name, webhook_url=f"{receiver.url}{path}")
            assert client.post("/api/v1/jobs", json=body).status_code == 202
            assert client.post(f"/api/v1/jobs/{name}/cancel").status_code == 202

        def settled(name: str) -> list[dict[str, Any]]:
            return webhook_events(client.get(f"/api/v1/jobs/{name}/events").json()["data"])

        wait_until(lambda: bool(settled("moved") and settled("elsewhere")), timeout=30)
        moved, elsewhere = settled("moved"), settled("elsewhere")
    assert [d.path for d in receiver.for_job("moved")] == ["/moved", "/hook"]
    assert [e["type"] for e in moved] == ["webhook_delivered"]
    # The receiver saw one request: the redirect to another host was not followed.
    assert [d.path for d in receiver.for_job("elsewhere")] == ["/elsewhere"]
    assert [e["type"] for e in elsewhere] == ["webhook_failed"]
    assert "HTTP 307 (redirect not followed" in elsewhere[0]["message"]


def test_a_pending_delivery_survives_a_restart(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    settings = make_settings(webhook_backoff_seconds=2.0, webhook_max_attempts=3)
    receiver.fail_first = 1
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as first:
        first.post("/api/v1/jobs", json=job_body(name="restarted", webhook_url=receiver.url))
        first.post("/api/v1/jobs/restarted/cancel")
        wait_until(lambda: len(receiver.deliveries) == 1, timeout=30)
        wait_until(
            lambda: webhook_events(first.get("/api/v1/jobs/restarted/events").json()["data"]),
            timeout=30,
        )
    # The first server is gone with its retry still due; the next one makes it.
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as second:

        def recorded() -> list[dict[str, Any]]:
            return webhook_events(second.get("/api/v1/jobs/restarted/events").json()["data"])

        wait_until(lambda: len(recorded()) == 2, timeout=30)
        assert [e["type"] for e in recorded()] == ["webhook_failed", "webhook_delivered"]
    assert [d.headers["X-Ainfinity-Attempt"] for d in receiver.deliveries] == ["1", "2"]
    assert not (settings.home / "webhooks" / "restarted").exists()


def test_one_delivery_per_job_across_workers(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 0.2  # attempts overlap the workers' passes
    names = [f"multi-{i}" for i in range(6)]
    env = {
        "AINFINITY_WEBHOOK_SECRET": SECRET,
        "AINFINITY_RECONCILE_INTERVAL_SECONDS": "0.1",
        "AINFINITY_WEBHOOK_BACKOFF_SECONDS": "0.1",
    }
    with UvicornServer(tmp_path / "home", workers=2, env=env) as server, server.client() as api:
        for name in names:
            body = job_body(name=name, webhook_url=f"{receiver.url}/hook")
            assert api.post("/api/v1/jobs", json=body).status_code == 202
        for name in names:
            assert api.post(f"/api/v1/jobs/{name}/cancel").status_code == 202

        def delivered(name: str) -> bool:
            events = api.get(f"/api/v1/jobs/{name}/events").json()["data"]
            return any(e["type"] == "webhook_delivered" for e in events)

        wait_until(lambda: all(delivered(name) for name in names), timeout=60)
        time.sleep(1.5)
        events = {name: api.get(f"/api/v1/jobs/{name}/events").json()["data"] for name in names}
    for name in names:
        assert len(receiver.for_job(name)) == 1, name
        assert [e["type"] for e in webhook_events(events[name])] == ["webhook_delivered"]
    assert len({d.headers["X-Ainfinity-Delivery"] for d in receiver.deliveries}) == len(names)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://",
        "http:///path",
        "https://user:pass@example.com/hook",
        "http://example.com:99999/hook",
        "http://exa mple.com/",
        "http://example.com/a\x00b",
        "http://example.com/" + "a" * 2100,
        "example.com/hook",
    ],
)
def test_invalid_webhook_urls_are_refused(client: TestClient, url: str) -> None:
    response = client.post("/api/v1/jobs", json=job_body(webhook_url=url))
    assert response.status_code == 422, url
    assert response.json()["detail"]["code"] == "validation_error"
    assert client.get("/api/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/ci", True),
        ("https://HOOKS.example.com./ci", True),
        ("https://build.corp.example/x", True),
        ("https://corp.example/x", False),  # `*.` names subdomains only
        ("http://127.0.0.1:9/", False),
        ("https://hooks.example.com.evil.test/", False),
        ("https://evilcorp.example/", False),
    ],
)
def test_webhook_hosts_confine_where_the_server_posts(
    make_settings: MakeSettings, url: str, allowed: bool
) -> None:
    settings = make_settings(webhook_hosts=["hooks.example.com", "*.corp.example"])
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        response = client.post("/api/v1/jobs", json=job_body(name="hooked", webhook_url=url))
        if allowed:
            assert response.status_code == 202, response.text
        else:
            assert response.status_code == 403, response.text
            assert response.json()["detail"]["code"] == "webhook_not_allowed"
            assert client.get("/api/v1/jobs/hooked").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "http://127.0.0.1:8000/api/v1/jobs",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",  # shared address space
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_internal_addresses_are_refused_by_default(make_settings: MakeSettings, url: str) -> None:
    settings = make_settings(webhook_hosts=[])
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        response = client.post("/api/v1/jobs", json=job_body(name="ssrf", webhook_url=url))
        assert response.status_code == 403, response.text
        assert response.json()["detail"]["code"] == "webhook_not_allowed"
        assert "AINFINITY_WEBHOOK_HOSTS" in response.json()["detail"]["msg"]
        assert client.get("/api/v1/jobs/ssrf").status_code == 404


def test_a_name_that_resolves_inside_is_refused_when_delivering(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    # `localhost` is a name: it passes at POST, and is checked on the address it resolves
    # to, when the delivery connects (so DNS cannot turn a checked name into an inside one).
    port = receiver.url.rsplit(":", 1)[1]
    settings = make_settings(webhook_hosts=[], webhook_backoff_seconds=0.1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        body = job_body(name="inside", webhook_url=f"http://localhost:{port}/hook")
        assert client.post("/api/v1/jobs", json=body).status_code == 202
        assert client.post("/api/v1/jobs/inside/cancel").status_code == 202

        def refused() -> list[dict[str, Any]]:
            events = client.get("/api/v1/jobs/inside/events").json()["data"]
            return [e for e in events if e["type"] == "webhook_failed"]

        wait_until(lambda: bool(refused()), timeout=20)
        time.sleep(0.5)  # no retry follows
        [event] = refused()
        assert "resolves to an internal address" in event["message"]
        assert event["message"].endswith("not retried")
    assert receiver.for_job("inside") == []


def test_naming_an_internal_host_allows_it(make_settings: MakeSettings) -> None:
    settings = make_settings(webhook_hosts=["10.0.0.7"])
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        body = job_body(name="named", webhook_url="http://10.0.0.7/hook")
        assert client.post("/api/v1/jobs", json=body).status_code == 202
