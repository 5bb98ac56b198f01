"""Who sees what: `user` keys see and act on their own jobs only; `admin` keys on all."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import job_body
from tests.conftest import MakeSettings

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef00"
OPS = "ops-key-0123456789abcdef00"
# Bob's key is configured by its digest only: the plain key need not sit in config.
KEYS = (
    f"alice:{ALICE}:user,bob:sha256:{hashlib.sha256(BOB.encode()).hexdigest()}:user,ops:{OPS}:admin"
)

# Every route that names a job: (method, path template, expected status for its owner).
JOB_ROUTES = [
    ("GET", "/api/v1/jobs/{name}", 200),
    ("GET", "/api/v1/jobs/{name}/logs", 200),
    ("GET", "/api/v1/jobs/{name}/events", 200),
    ("GET", "/api/v1/jobs/{name}/metrics", 200),
    ("GET", "/api/v1/jobs/{name}/checkpoints", 200),
    ("GET", "/api/v1/jobs/{name}/task", 200),
    ("POST", "/api/v1/jobs/{name}/cancel", 202),
    ("DELETE", "/api/v1/jobs/{name}", 204),
]


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(api_keys=SecretStr(KEYS))


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def as_key(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key else {}


def create(client: TestClient, key: str, name: str) -> None:
    response = client.post("/api/v1/jobs", json=job_body(name=name), headers=as_key(key))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(("method", "path", "ok"), JOB_ROUTES)
@pytest.mark.parametrize(
    ("who", "key", "expected"),
    [
        ("no key", None, 401),
        ("wrong key", "not-a-key-at-all-000000", 401),
        ("another user", BOB, 404),
        ("admin", OPS, None),  # None: what the owner gets
        ("the owner", ALICE, None),
    ],
)
def test_every_job_route_for_every_kind_of_caller(
    app_client: TestClient,
    method: str,
    path: str,
    ok: int,
    who: str,
    key: str | None,
    expected: int | None,
) -> None:
    create(app_client, ALICE, "alices")
    if method == "DELETE":
        # Only a finished job may be deleted: cancel it (queued, so it ends at once).
        app_client.post("/api/v1/jobs/alices/cancel", headers=as_key(ALICE))

    response = app_client.request(method, path.format(name="alices"), headers=as_key(key))

    assert response.status_code == (expected or ok), (who, response.text)
    if expected == 404:
        # Exactly what a job that does not exist answers: nothing is given away.
        missing = app_client.request(method, path.format(name="nosuch"), headers=as_key(key))
        assert response.json() == {
            "detail": {**missing.json()["detail"], "msg": "No job named 'alices'."}
        }
    if expected is not None:
        job = app_client.get("/api/v1/jobs/alices", headers=as_key(ALICE))
        assert job.status_code == 200 and job.json()["status"] in ("PENDING", "CANCELLED")


def test_lists_show_users_their_own_jobs_and_admins_all(app_client: TestClient) -> None:
    create(app_client, ALICE, "a1")
    create(app_client, BOB, "b1")
    create(app_client, ALICE, "a2")

    def names(key: str) -> list[str]:
        body = app_client.get("/api/v1/jobs", headers=as_key(key)).json()
        return [job["name"] for job in body["data"]]

    assert names(ALICE) == ["a2", "a1"]
    assert names(BOB) == ["b1"]
    assert names(OPS) == ["a2", "b1", "a1"]


def test_events_record_the_actor(app_client: TestClient) -> None:
    create(app_client, ALICE, "acted")
    app_client.post("/api/v1/jobs/acted/cancel", headers=as_key(OPS))

    events = app_client.get("/api/v1/jobs/acted/events", headers=as_key(ALICE)).json()["data"]

    assert [(e["type"], e["actor"]) for e in events] == [
        ("created", "alice"),
        ("cancel_requested", "ops"),
        ("status_changed", "ops"),
    ]


def test_keys_never_reach_the_logs(
    app_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    create(app_client, ALICE, "logged")
    app_client.get("/api/v1/jobs/logged", headers=as_key(BOB))
    app_client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {OPS}"})
    app_client.get("/api/v1/jobs", headers=as_key("wrong-key-0000000000"))

    text = caplog.text
    # Every request was logged (so there was something to leak), none with its key.
    requests = [r for r in caplog.records if r.name == "ainfinity.request"]
    assert len(requests) >= 4
    for key in (ALICE, BOB, OPS, "wrong-key-0000000000"):
        assert key not in text
