"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis).

Every operation gets positive and negative cases (the examples, coverage and fuzzing
phases), sent with a valid key to a real app; each answer must pass exactly four checks:
no 5xx, a declared status code, a declared content type, a body matching the declared
schema. Hypothesis runs derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, SAMPLE_SFT, job_body, wait_for, wait_until
from tests.conftest import MakeSettings
from tests.sky_fake import RecordingSkyPilot
from tests.sky_serve_fake import RecordingSkyServe

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Fuzzing-phase cases per operation; the examples and coverage phases add theirs.
MAX_EXAMPLES_PER_OPERATION = 100
MIN_TOTAL_CASES = 1000
# A case that hangs fails after this long instead of stalling CI.
REQUEST_TIMEOUT_SECONDS = 10
# Jobs that exist in every fuzzed app: two queued, one finished (so delete can succeed), and
# one that really trained, whose model (and checkpoint) the model routes and /v1 serve.
QUEUED_SEEDS = ("seed-0", "seed-1")
FINISHED_SEED = "seed-2"
SEEDS = (*QUEUED_SEEDS, FINISHED_SEED)
TRAINED = "trained"
MODELS = (
    "tiny-random-llama",
    f"ft:tiny-random-llama:{TRAINED}",
    f"ft:tiny-random-llama:{TRAINED}:ckpt-1",
)
# Generation is real: fuzzed requests ask for a few tokens at most.
MAX_FUZZED_TOKENS = 4
# Streams of a job last as long as the job: only a finished one is streamed, so they end.
STREAMING = frozenset({"/api/v1/jobs/{name}/logs", "/api/v1/jobs/{name}/events/stream"})
# Streams every job's events from now on and never ends by itself: excluded, it would hold
# each case until the request timeout. tests/ of the streams cover it.
NEVER_ENDING = "/api/v1/events/stream"

# Pausing needs a running trainer and resuming a paused one: no fuzzed app has either (no
# job trains there). Their 2xx answers are the job shapes every other route returns, checked
# against a real trainer by tests/test_pause_resume.py and tests/fine_tuning.
NEED_A_TRAINER = frozenset(
    {
        "POST /api/v1/jobs/{name}/pause",
        "POST /api/v1/jobs/{name}/resume",
        "POST /v1/fine_tuning/jobs/{fine_tuning_job_id}/pause",
        "POST /v1/fine_tuning/jobs/{fine_tuning_job_id}/resume",
    }
)
# Deployments in every fuzzed app (on the recording SkyServe): one READY (so a rolling update
# can start), one PENDING; new ones are aimed at a model directory SkyServe can serve.
READY_DEPLOYMENT, PENDING_DEPLOYMENT = "dep-ready", "dep-pending"
DEPLOYMENTS = (READY_DEPLOYMENT, PENDING_DEPLOYMENT)
DEPLOYABLE_MODEL = "house-llama"
# Ids the fuzzed app of the running test made (uploaded files, an OpenAI job), by parameter.
seeded: dict[str, tuple[str, ...]] = {}

# Per operation: the cases sent, and how many of them were answered 2xx.
executed: Counter[str] = Counter()
succeeded: Counter[str] = Counter()


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI document; building an app touches no files, so any home will do."""
    home = Path(tempfile.gettempdir()) / "ainfinity-openapi-only"
    return create_app(Settings(_env_file=None, home=home)).openapi()  # type: ignore[call-arg]


# Loaded at import, so pytest collects one test per operation (schemathesis's lazy
# `pytest.from_fixture` loader breaks on pytest 9: it sets `Node._nodeid`, which is gone).
# Each case is sent to a fuzzed app of its own test (`fuzzed_app`), which serves this very
# document (checked there).
schema = schemathesis.openapi.from_dict(
    _openapi(),
    config=schemathesis.Config.from_dict(
        {
            # Both ways of sending the key, with the same key: generated security values
            # would otherwise send two different keys and every case would stop at 401.
            "headers": {"X-API-Key": API_KEY, "Authorization": f"Bearer {API_KEY}"},
            "request-timeout": REQUEST_TIMEOUT_SECONDS,
        }
    ),
).exclude(path=NEVER_ENDING)


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a job that really trained (with one checkpoint), made once."""
    home = tmp_path_factory.mktemp("trained") / "home"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        api_keys=SecretStr(f"tester:{API_KEY}"),
        local_max_jobs=1,
        rate_limit="100000/minute",
        token_stats=False,
    )
    body = job_body(name=TRAINED)
    body["hyperparameters"].update(max_steps=2, save_steps=1, save_total_limit=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.post("/api/v1/jobs", json=body).status_code == 202
        assert wait_for(client, TRAINED, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    return home / "jobs" / TRAINED


@pytest.fixture
def fuzzed_app(make_settings: MakeSettings, trained_job: Path) -> Iterator[FastAPI]:
    """A real app with a few jobs, for all the cases of one operation.

    local_max_jobs=0: no job ever trains here (the trained one is a copy, found at start-up
    like any job on disk). The recording SDK: a generated skypilot job is checked by
    SkyPilot's own offline validation and never reaches a SkyPilot server.
    """
    settings = make_settings(local_max_jobs=0, local_max_deployments=0, deploy_poll_seconds=0.1)
    shutil.copytree(trained_job, settings.home / "jobs" / TRAINED)
    model_dir = settings.model_dirs[0] / DEPLOYABLE_MODEL
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    serve = RecordingSkyServe()
    app = create_app(settings, skypilot_sdk=RecordingSkyPilot(), skyserve_sdk=serve)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        assert client.get("/openapi.json").json() == schema.raw_schema
        _seed_deployments(client, serve)
        for name in SEEDS:
            created = client.post("/api/v1/jobs", json=job_body(name=name))
            assert created.status_code == 202, created.text
        cancelled = client.post(f"/api/v1/jobs/{FINISHED_SEED}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        files = [
            client.post(
                "/v1/files",
                files={"file": ("seed.jsonl", SAMPLE_SFT.read_bytes())},
                data={"purpose": "fine-tune"},
            ).json()["id"]
            for _ in range(2)
        ]
        job = client.post(
            "/v1/fine_tuning/jobs", json={"model": "tiny-random-llama", "training_file": files[0]}
        )
        assert job.status_code == 200, job.text
        seeded.update(file_id=tuple(files), fine_tuning_job_id=(job.json()["id"],))
    yield app
    # The fuzzer ran the app's lifespan on its own event loop: end it (and its reconciler)
    # now, not at interpreter exit.
    asgi.shutdown_lifespans()


def _seed_deployments(client: TestClient, serve: RecordingSkyServe) -> None:
    body = {"model": DEPLOYABLE_MODEL, "executor": "skypilot"}
    for name in DEPLOYMENTS:
        created = client.post("/api/v1/deployments", json={**body, "name": name})
        assert created.status_code == 202, created.text
        wait_until(lambda name=name: name in serve.services)
    serve.set_replica(READY_DEPLOYMENT, 1, "READY", launched_at=1_700_000_000)
    serve.set_service(READY_DEPLOYMENT, "READY")
    wait_until(
        lambda: client.get(f"/api/v1/deployments/{READY_DEPLOYMENT}").json()["status"] == "READY"
    )
    serve.logs[(READY_DEPLOYMENT, "controller", None)] = "controller log\n"


def _pick(case: schemathesis.Case, choices: tuple[Any, ...]) -> Any | None:
    """For about half the positive cases, one of `choices`, chosen from the case itself.

    Random values almost never name a job or a readable dataset, so without this every
    answer would be a 404 or 403 and the success schemas would go unchecked. crc32 (not
    hash()) keeps the choice the same in every run.
    """
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    digest = zlib.crc32(json.dumps([case.path_parameters, case.body], default=str).encode())
    return None if digest % 2 else choices[(digest // 2) % len(choices)]


def _aim_at_real_data(case: schemathesis.Case) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        names = (FINISHED_SEED,) if case.operation.path in STREAMING else SEEDS
        if case.operation.path.startswith("/api/v1/deployments"):
            names = DEPLOYMENTS
        name = _pick(case, names)
        if name is not None:
            case.path_parameters["name"] = name
    if case.path_parameters and "model_id" in case.path_parameters:
        model = _pick(case, MODELS)
        if model is not None:
            case.path_parameters["model_id"] = model
    for parameter, ids in seeded.items():
        if case.path_parameters and parameter in case.path_parameters:
            chosen = _pick(case, ids)
            if chosen is not None:
                case.path_parameters[parameter] = chosen
    if case.operation.path == "/v1/fine_tuning/jobs" and isinstance(case.body, dict):
        if _pick(case, (True,)):
            case.body.update(training_file=seeded["file_id"][0], model="tiny-random-llama")
    if case.operation.path.startswith("/api/v1/jobs") and isinstance(case.body, dict):
        if _pick(case, (True,)):
            case.body.update(dataset=str(SAMPLE_SFT), model="tiny-random-llama")
    if case.operation.path == "/api/v1/deployments" and isinstance(case.body, dict):
        if _pick(case, (True,)):
            case.body.update(model=DEPLOYABLE_MODEL, executor="skypilot", resources={})
    if case.operation.path == "/api/v1/deployments/{name}" and isinstance(case.body, dict):
        if _pick(case, (True,)):
            case.body.update(model=DEPLOYABLE_MODEL)
    if case.operation.path.startswith("/v1/") and isinstance(case.body, dict):
        model = _pick(case, MODELS)
        if model is not None:
            case.body["model"] = model
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(field), int) and case.body[field] > MAX_FUZZED_TOKENS:
                case.body[field] = MAX_FUZZED_TOKENS
        if model is not None and "max_tokens" not in case.body:
            case.body["max_tokens"] = MAX_FUZZED_TOKENS


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    # too_slow: every case is a real request to a real app. function_scoped_fixture: one
    # app (one store) serves all the cases of an operation on purpose, as a server would.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_openapi(case: schemathesis.Case, fuzzed_app: FastAPI) -> None:
    _aim_at_real_data(case)
    response = case.call_and_validate(checks=CHECKS, app=fuzzed_app)
    executed[case.operation.label] += 1
    if 200 <= response.status_code < 300:
        succeeded[case.operation.label] += 1


def test_the_fuzzing_ran_enough_cases_and_reached_every_success() -> None:
    """Runs after the fuzzing above (pytest keeps file order): it counts what really ran."""
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert operations and not any(NEVER_ENDING in operation for operation in operations)
    total = sum(executed.values())
    assert total >= MIN_TOTAL_CASES, f"only {total} cases ran: {dict(executed)}"
    assert set(executed) == operations, operations ^ set(executed)
    assert NEED_A_TRAINER <= operations
    reached = set(succeeded) | NEED_A_TRAINER
    assert reached == operations, f"never answered 2xx: {operations - reached}"


def test_every_error_is_declared_as_the_json_error_body_the_app_sends(client: TestClient) -> None:
    """FastAPI's defaults (its `HTTPValidationError`, errors in a route's own media type)
    are replaced in one place (ainfinity.api.openapi_schema); app-wide errors are declared."""
    document = client.get("/openapi.json").json()
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])

    def error(model: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}

    for path, item in document["paths"].items():
        # OpenAI's error shape on its routes, where a bad parameter is a 400 as OpenAI has it.
        openai = path.startswith("/v1/")
        for method, operation in item.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    expected = error("OpenAIError" if openai else "ErrorResponse")
                    assert response["content"] == expected, (method, path, status)
            if operation.get("requestBody"):
                assert {"400", "413"} <= set(responses), (method, path)
                assert ("422" in responses) is not openai, (method, path)
            if path.startswith(("/api/", "/v1/")):
                assert {"401", "429"} <= set(responses), (method, path)
