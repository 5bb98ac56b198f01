"""`POST /v1/fine_tuning/jobs` and the job routes through the official SDK (strict) against
the real app, with no job launched: the `"auto"` rules, how a job reads, and every bad
request answered in OpenAI's shape with its `param`, leaving nothing behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from tests.builders import API_KEY, job_body
from tests.conftest import MakeSettings
from tests.fine_tuning.conftest import SAMPLE_CHAT

USER_KEY = "test-key-user-jobs-123456"


@pytest.fixture
def app_client(make_settings: MakeSettings) -> Iterator[TestClient]:
    settings = make_settings(api_keys=SecretStr(f"tester:{API_KEY},user:{USER_KEY}:user"))
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=USER_KEY,
        http_client=app_client,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture
def chat_file(client: openai.OpenAI) -> str:
    return client.files.create(file=SAMPLE_CHAT, purpose="fine-tune").id


def native(app_client: TestClient, name: str) -> dict[str, Any]:
    response = app_client.get(f"/api/v1/jobs/{name}", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def job_names(app_client: TestClient) -> list[str]:
    jobs = app_client.get("/api/v1/jobs", headers={"X-API-Key": API_KEY}).json()["data"]
    return [job["name"] for job in jobs]


def test_auto_values_follow_the_documented_rules(
    client: openai.OpenAI, app_client: TestClient, chat_file: str
) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=chat_file)

    # 64 rows: 3 epochs would see 192 examples (>= 100), a batch is 0.2 % of 64 rounded up.
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (3, 1)
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.status == "queued" and job.ainfinity_status == "PENDING"  # type: ignore[attr-defined]
    assert 0 <= job.seed < 2**31 and job.organization_id == "org-user"
    spec = native(app_client, job.id)["spec"]
    assert spec["name"] == job.id and spec["method"] == "full"
    assert spec["hyperparameters"]["learning_rate"] == pytest.approx(2e-5)
    assert spec["hyperparameters"]["seed"] == job.seed
    # A checkpoint per epoch (64 steps of one row), the newest three kept.
    assert spec["hyperparameters"]["save_steps"] == 64
    assert spec["hyperparameters"]["save_total_limit"] == 3


def test_small_files_get_more_epochs_and_method_values_win(
    client: openai.OpenAI, app_client: TestClient, tmp_path: Path
) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}]}
        for n in range(10)
    ]
    small = client.files.create(
        file=("small.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()),
        purpose="fine-tune",
    )

    auto = client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=small.id)
    chosen = client.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=small.id,
        hyperparameters={"n_epochs": 7, "batch_size": 2},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 4, "learning_rate_multiplier": 3}},
        },
    )

    assert auto.hyperparameters.n_epochs == 10  # ceil(100 / 10)
    assert (chosen.hyperparameters.n_epochs, chosen.hyperparameters.batch_size) == (4, 2)
    assert chosen.hyperparameters.learning_rate_multiplier == 3
    hyperparameters = native(app_client, chosen.id)["spec"]["hyperparameters"]
    assert hyperparameters["learning_rate"] == pytest.approx(6e-5)
    assert hyperparameters["epochs"] == 4 and hyperparameters["save_steps"] == 5


def bad_requests(training: str, preference: str) -> list[tuple[dict[str, Any], str]]:
    """Request bodies (over a valid one) and the `param` each one's 400 names."""
    return [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"batch_size": 0}},
                }
            },
            "method.supervised.hyperparameters.batch_size",
        ),
        ({"model": "gpt-4o-mini"}, "model"),
        ({"model": "org/some-hub-model"}, "model"),
        ({"model": "/etc"}, "model"),
        ({"model": "ft:tiny-random-llama:ftjob-000000000000000000000000"}, "model"),
        ({"suffix": "x; rm -rf /"}, "suffix"),
        ({"suffix": "$(reboot)"}, "suffix"),
        ({"suffix": "a" * 65}, "suffix"),
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ({"metadata": {"a key": "v"}}, "metadata.a key"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"validation_file": "file-doesnotexist"}, "validation_file"),
        ({"training_file": preference}, "training_file"),
        ({"method": {"type": "dpo"}}, "training_file"),
        ({"validation_file": preference}, "validation_file"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "supervised", "dpo": {}}}, "method"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"seed": -1}, "seed"),
        ({"extra_body": {"unknown_field": 1}}, "unknown_field"),
    ]


def test_bad_requests_are_400_with_their_param_and_create_nothing(
    client: openai.OpenAI, app_client: TestClient, chat_file: str, tmp_path: Path
) -> None:
    row = {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "go away"}],
    }
    preference = client.files.create(
        file=("p.jsonl", (json.dumps(row) + "\n").encode()), purpose="fine-tune"
    ).id

    for change, param in bad_requests(chat_file, preference):
        body = {"model": "tiny-random-llama", "training_file": chat_file, **change}
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(**body)  # type: ignore[arg-type]
        error = refused.value.body
        assert isinstance(error, dict), change
        assert error["param"] == param, (change, error)
        assert error["type"] == "invalid_request_error" and error["message"], (change, error)
        assert "literal" not in error["message"], error

    assert job_names(app_client) == []
    assert list(client.fine_tuning.jobs.list()) == []


def test_n_epochs_zero_names_the_bound(client: openai.OpenAI, chat_file: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model="tiny-random-llama", training_file=chat_file, hyperparameters={"n_epochs": 0}
        )
    assert refused.value.body["message"] == (  # type: ignore[index]
        "hyperparameters.n_epochs: Input should be greater than or equal to 1"
    )


def test_unknown_and_native_jobs_are_404(
    client: openai.OpenAI, app_client: TestClient, chat_file: str
) -> None:
    posted = app_client.post(
        "/api/v1/jobs", json=job_body(name="native-one"), headers={"X-API-Key": USER_KEY}
    )
    assert posted.status_code == 202
    for job_id in ("ftjob-000000000000000000000000", "native-one", "../../etc"):
        for call in (
            client.fine_tuning.jobs.retrieve,
            client.fine_tuning.jobs.cancel,
            client.fine_tuning.jobs.pause,
            client.fine_tuning.jobs.resume,
            lambda i: client.fine_tuning.jobs.list_events(i),
            lambda i: client.fine_tuning.jobs.checkpoints.list(i),
        ):
            with pytest.raises(openai.NotFoundError):
                call(job_id)
    # The native job is not an OpenAI job: it is not listed there either.
    assert list(client.fine_tuning.jobs.list()) == []


def test_state_conflicts_are_409(client: openai.OpenAI, chat_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=chat_file)

    with pytest.raises(openai.ConflictError) as queued:
        client.fine_tuning.jobs.pause(job.id)  # queued: nothing to pause yet
    with pytest.raises(openai.ConflictError) as not_paused:
        client.fine_tuning.jobs.resume(job.id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.ConflictError) as again:
        client.fine_tuning.jobs.cancel(job.id)

    assert queued.value.body["code"] == "job_not_running"  # type: ignore[index]
    assert not_paused.value.body["code"] == "job_not_paused"  # type: ignore[index]
    assert again.value.body["code"] == "job_finished"  # type: ignore[index]
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert events[0].level == "warn" and events[-1].message.startswith("job created")


def test_lists_filter_on_metadata_and_refuse_unknown_cursors(
    client: openai.OpenAI, app_client: TestClient, chat_file: str
) -> None:
    made = [
        client.fine_tuning.jobs.create(
            model="tiny-random-llama", training_file=chat_file, metadata=metadata
        ).id
        for metadata in ({"team": "a"}, {"team": "b", "env": "ci"}, None, {"team": "a"})
    ]

    def ids(**params: Any) -> list[str]:
        return [job.id for job in client.fine_tuning.jobs.list(**params)]

    assert ids(metadata={"team": "a"}) == [made[3], made[0]]
    assert ids(metadata={"team": "b", "env": "ci"}) == [made[1]]
    assert ids(metadata={"team": "c"}) == []
    assert ids(limit=1) == made[::-1]
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    nulls = app_client.get("/v1/fine_tuning/jobs?metadata=null", headers=headers).json()
    assert [job["id"] for job in nulls["data"]] == [made[2]]
    for query in ("after=ftjob-000000000000000000000000", "metadata=x", "limit=0"):
        response = app_client.get(f"/v1/fine_tuning/jobs?{query}", headers=headers)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.list_events(made[0], after="ftevent-nope")
