"""`Idempotency-Key` on POST /jobs and cancel: one action per key, the first answer on retry."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from ainfinity.store.idempotency import KEY_TTL_SECONDS, IdempotencyKeys
from tests.builders import API_KEY, OTHER_KEY, job_body


def job_names(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.home / "jobs").iterdir())


def test_a_retry_gets_the_first_answer_and_no_second_job(
    client: TestClient, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "ci-run-1234"}
    first = client.post("/api/v1/jobs", json=job_body(), headers=headers)
    again = client.post("/api/v1/jobs", json=job_body(), headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()  # generated name and all
    assert job_names(settings) == [first.json()["name"]]


def test_the_same_key_with_another_body_is_409(client: TestClient, settings: Settings) -> None:
    headers = {"Idempotency-Key": "ci-run-5678"}
    client.post("/api/v1/jobs", json=job_body(), headers=headers)
    body = job_body()
    body["hyperparameters"]["learning_rate"] = 0.5

    response = client.post("/api/v1/jobs", json=body, headers=headers)

    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "idempotency_conflict"
    assert len(job_names(settings)) == 1


def test_keys_belong_to_their_caller(client: TestClient, settings: Settings) -> None:
    headers = {"Idempotency-Key": "shared-words"}
    mine = client.post("/api/v1/jobs", json=job_body(), headers=headers)
    theirs = client.post(
        "/api/v1/jobs", json=job_body(), headers={**headers, "X-API-Key": OTHER_KEY}
    )

    assert mine.json()["name"] != theirs.json()["name"]
    assert len(job_names(settings)) == 2


def test_a_refused_request_frees_its_key(client: TestClient, tmp_path: Path) -> None:
    headers = {"Idempotency-Key": "fix-and-retry"}
    missing = tmp_path / "later.jsonl"
    refused = client.post("/api/v1/jobs", json=job_body(dataset=str(missing)), headers=headers)
    missing.write_text('{"text": "now it exists"}\n')
    accepted = client.post("/api/v1/jobs", json=job_body(dataset=str(missing)), headers=headers)

    assert refused.status_code == 422
    assert accepted.status_code == 202


def test_concurrent_retries_make_one_job(client: TestClient, settings: Settings) -> None:
    def post(_: int) -> tuple[int, str]:
        response = client.post(
            "/api/v1/jobs", json=job_body(), headers={"Idempotency-Key": "burst"}
        )
        return response.status_code, response.json()["name"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = set(pool.map(post, range(16)))

    assert len(answers) == 1 and next(iter(answers))[0] == 202
    assert len(job_names(settings)) == 1


def test_a_key_expires_after_24_hours(client: TestClient, settings: Settings) -> None:
    headers = {"Idempotency-Key": "yesterday"}
    first = client.post("/api/v1/jobs", json=job_body(), headers=headers).json()
    [stored] = list((settings.home / "idempotency").glob("*.json"))
    record = json.loads(stored.read_text())
    record["at"] = time.time() - KEY_TTL_SECONDS - 1
    stored.write_text(json.dumps(record))

    second = client.post("/api/v1/jobs", json=job_body(), headers=headers).json()

    assert second["name"] != first["name"]


def test_a_retried_cancel_answers_as_the_first_did(client: TestClient) -> None:
    client.post("/api/v1/jobs", json=job_body(name="once"))
    headers = {"Idempotency-Key": "stop-once", "X-API-Key": API_KEY}

    first = client.post("/api/v1/jobs/once/cancel", headers=headers)
    again = client.post("/api/v1/jobs/once/cancel", headers=headers)
    plain = client.post("/api/v1/jobs/once/cancel")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and first.json()["status"] == "CANCELLED"
    assert plain.status_code == 409  # without the key, cancelling a finished job is refused


def test_a_claim_left_by_a_killed_request_is_taken_over(tmp_path: Path) -> None:
    keys = IdempotencyKeys(tmp_path)
    acted: list[str] = []

    def act(answer: str) -> Callable[[], dict[str, str]]:
        return lambda: acted.append(answer) or {"answer": answer}

    # What a worker killed while acting leaves behind: a claim with no answer and no lock.
    keys.run(caller="c", key="k0", operation="create", body_fingerprint="f", act=act("first"))
    claim = next(keys.dir.glob("*.json"))
    record = json.loads(claim.read_text())
    del record["response"]
    claim.write_text(json.dumps(record))
    dead_claims = {p.name: p.read_bytes() for p in keys.dir.glob("*.json")}

    began = time.monotonic()
    answer = keys.run(caller="c", key="k0", operation="create", body_fingerprint="f", act=act("2"))
    assert answer == {"answer": "2"} and acted == ["first", "2"]
    assert time.monotonic() - began < 5  # not WAIT_SECONDS, not 24 hours
    assert {p.name for p in keys.dir.glob("*.json")} == dead_claims.keys()


def test_a_claim_whose_owner_lives_is_waited_for(tmp_path: Path) -> None:
    keys = IdempotencyKeys(tmp_path)
    started, release = threading.Event(), threading.Event()

    def slow() -> dict[str, str]:
        started.set()
        release.wait(10)
        return {"answer": "slow"}

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            keys.run, caller="c", key="k1", operation="create", body_fingerprint="f", act=slow
        )
        started.wait(10)
        second = pool.submit(
            keys.run, caller="c", key="k1", operation="create", body_fingerprint="f",
            act=lambda: {"answer": "twice"},
        )  # fmt: skip
        time.sleep(0.5)
        assert not second.done()  # the owner's lock is held: no take-over
        release.set()
        assert first.result(10) == second.result(10) == {"answer": "slow"}


def test_startup_sweeps_what_killed_requests_left(tmp_path: Path) -> None:
    keys = IdempotencyKeys(tmp_path)
    keys.dir.mkdir(parents=True)
    old_temp = keys.dir / ".abc.json.0123.tmp"
    young_temp = keys.dir / ".def.json.4567.tmp"
    expired = keys.dir / ("0" * 64 + ".json")
    for path in (old_temp, young_temp, expired):
        path.write_text("{}")
    long_ago = time.time() - KEY_TTL_SECONDS - 10
    os.utime(old_temp, (long_ago, long_ago))
    os.utime(expired, (long_ago, long_ago))
    keys.sweep()
    assert sorted(p.name for p in keys.dir.iterdir()) == [young_temp.name]
