"""Hostile strings in every string field of a job body: nothing runs, nothing escapes.

Every field (and the same field behind a valid prefix) gets every probe of
`tests/probes.py`; each answer must be a 4xx, or a 2xx whose stored value is inert: the
rendered task loads back as one YAML document with the value only where it belongs (never
inside a script), and SkyPilot's own copy command for a bucket dataset runs without the
value breaking out of its argument. No marker may ever appear.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.jobs.task_render import load_template
from tests.builders import API_KEY, SAMPLE_SFT, job_body
from tests.conftest import MakeSettings
from tests.probes import (
    DEAD_WEBHOOK,
    MB,
    ONE_MB,
    PROBES,
    Probes,
    marker_probes,
    post_json,
)
from tests.sky_fake import RecordingSkyPilot

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probes]:
    yield from marker_probes(tmp_path_factory)


@pytest.fixture
def app_client(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Settings]]:
    """A real app whose body limit is far above 1 MB, so field validation answers big values.

    The recording SkyPilot SDK: skypilot jobs are checked by SkyPilot's own offline
    validation and never reach a SkyPilot server.
    """
    settings = make_settings(max_body_bytes=8 * MB)
    app = create_app(settings, skypilot_sdk=RecordingSkyPilot())
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client, settings


# -- every string field of a job body ---------------------------------------------------------

BodyFor = Callable[[str], dict[str, Any]]
SKY = {"executor": "skypilot"}
# Each field, and (".bucket", ".path", ...) the same field behind a valid prefix, so that
# probes reach the checks after the field's own pattern.
FIELDS: dict[str, BodyFor] = {
    "name": lambda v: {"name": v},
    "model": lambda v: {"model": v},
    "dataset": lambda v: {"dataset": v},
    "dataset.in-data-dir": lambda v: {"dataset": f"{SAMPLE_SFT.parent}/{v}.jsonl"},
    "dataset.bucket": lambda v: {**SKY, "dataset": f"s3://bucket/{v}.jsonl"},
    "validation_dataset": lambda v: {"validation_dataset": v},
    "validation_dataset.bucket": lambda v: {
        **SKY,
        "dataset": "s3://bucket/train.jsonl",
        "validation_dataset": f"s3://bucket/{v}.jsonl",
    },
    "output_uri": lambda v: {**SKY, "output_uri": v},
    "output_uri.bucket": lambda v: {**SKY, "output_uri": f"s3://bucket/{v}"},
    "method": lambda v: {"method": v},
    "lora.target_modules": lambda v: {"method": "lora", "lora": {"target_modules": [v]}},
    "hyperparameters.lr_scheduler_type": lambda v: {
        "hyperparameters": {"max_steps": 2, "lr_scheduler_type": v}
    },
    "hyperparameters.attn_implementation": lambda v: {
        "hyperparameters": {"max_steps": 2, "attn_implementation": v}
    },
    "resources.accelerators": lambda v: {"resources": {"accelerators": v}},
    "resources.cloud": lambda v: {"resources": {"cloud": v}},
    "resources.region": lambda v: {"resources": {"region": v}},
    "executor": lambda v: {"executor": v},
    "metadata.key": lambda v: {"metadata": {v: "v"}},
    "metadata.value": lambda v: {"metadata": {"note": v}},
    "webhook_url": lambda v: {"webhook_url": v},
    "webhook_url.path": lambda v: {"webhook_url": DEAD_WEBHOOK + v},
}


def string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_leaves(key)
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def run_skypilot_copy(source: str, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the shell command SkyPilot runs on each node to copy a bucket file mount.

    SkyPilot writes `$awscli_path s3 cp <source> <dst>` with the source unquoted; the aws
    CLI is replaced by `true`, so only what the shell makes of the source can happen.
    """
    from sky import cloud_stores

    monkeypatch.setattr(cloud_stores.S3CloudStorage, "_GET_AWSCLI", ["awscli_path=true"])
    command = cloud_stores.S3CloudStorage().make_sync_file_command(
        source=source, destination=str(scratch / "copied.jsonl")
    )
    subprocess.run(["bash", "-c", command], cwd=scratch, timeout=10, check=False)


def inert_problems(
    client: TestClient,
    settings: Settings,
    name: str,
    fields: dict[str, Any],
    value: str,
    run_copy: Callable[[str], None],
) -> list[str]:
    """Why a stored job does not hold `value` (sent as `fields`) as plain data; [] if it does."""
    problems = []
    template = load_template()
    documents = list(yaml.safe_load_all(client.get(f"/api/v1/jobs/{name}/task").text))
    if len(documents) != 1 or not isinstance(documents[0], dict):
        return [f"task.yaml is {len(documents)} documents"]
    task = documents[0]
    if set(task) - set(template) - {"file_mounts"}:
        problems.append(f"task.yaml grew keys {set(task) - set(template)}")
    if task["run"] != template["run"] or task["setup"] != template["setup"]:
        problems.append("the task's scripts are not the template's")
    # The job's environment comes from the task's envs: the template's, values included
    # (only the pip spec is pinned to this server's version).
    envs, fixed = dict(task["envs"]), {k: str(v) for k, v in template["envs"].items()}
    if envs.pop("AINFINITY_PIP_SPEC", None) is None or fixed.pop("AINFINITY_PIP_SPEC") is None:
        problems.append("task envs lost AINFINITY_PIP_SPEC")
    if envs != fixed:
        problems.append(f"task envs are {envs}")
    # The value may be a whole YAML scalar (a field rendered as data), never a part of a
    # longer string such as a script or an env value.
    sent = set(string_leaves(fields))
    for leaf in string_leaves(task):
        if value in leaf and leaf not in sent:
            problems.append(f"task.yaml pastes it into {leaf[:80]!r}")
    spec = client.get(f"/api/v1/jobs/{name}").json()["spec"]
    config_path = settings.home / "jobs" / name / "workdir" / "job_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key, item in fields.items():
        if key != "executor" and spec.get(key) != item:
            problems.append(f"spec.{key} came back as {str(spec.get(key))[:80]!r}")
        if key == "metadata" and config["metadata"] != item:
            problems.append("job_config.json holds other metadata than was sent")
    for mount, source in (task.get("file_mounts") or {}).items():
        if isinstance(source, str) and source.startswith("s3://"):
            if source not in sent:
                problems.append(f"file mount {mount} is {source!r}")
            run_copy(source)
    return problems


# Fields that are free text: probes are stored there (as data), which the test checks.
FREE_TEXT = {"metadata.value", "webhook_url.path"}
# Identifiers and closed choices: no probe is ever stored.
CLOSED = {
    "name",
    "model",
    "method",
    "executor",
    "metadata.key",
    "lora.target_modules",
    "hyperparameters.lr_scheduler_type",
    "hyperparameters.attn_implementation",
    "resources.accelerators",
    "resources.cloud",
    "resources.region",
}


@pytest.mark.parametrize("field", list(FIELDS))
def test_every_probe_in_every_body_field_is_refused_or_stored_inert(
    field: str,
    probes: Probes,
    app_client: tuple[TestClient, Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, settings = app_client
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = {p for p in tmp_path.rglob("*") if settings.home not in p.parents}
    problems: list[str] = []
    stored = 0
    for probe in [*PROBES, "1mb"]:
        value = ONE_MB if probe == "1mb" else probes.value(field, probe)
        fields = FIELDS[field](value)
        for route in ("/api/v1/jobs", "/api/v1/jobs/estimate"):
            response = post_json(client, route, job_body(**fields))
            where = f"{field} / {probe} / POST {route}"
            # 413 would mean the body limit, not the field, answered: the limit is 8 MB here.
            if response.status_code >= 500 or response.status_code == 413:
                problems.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                if not {"code", "msg"} <= set(response.json().get("detail", {})):
                    problems.append(f"{where}: error body {response.text[:200]}")
            elif route == "/api/v1/jobs":
                stored += 1
                name = response.json()["name"]
                for problem in inert_problems(
                    client,
                    settings,
                    name,
                    fields,
                    value,
                    lambda source: run_skypilot_copy(source, scratch, monkeypatch),
                ):
                    problems.append(f"{where}: {problem}")
    assert not problems, "\n".join(problems)
    assert not probes.fired(), f"probes executed: {probes.fired()}"
    # Nothing was written outside the server's home (this tmp_path is a data dir).
    assert {p for p in tmp_path.rglob("*") if settings.home not in p.parents} == before
    if field in FREE_TEXT:
        assert stored > 0, f"no probe was stored in {field}: the inertness checks never ran"
    if field in CLOSED:
        assert stored == 0, f"{stored} probes were accepted in {field}"


def test_a_bucket_dataset_that_would_break_out_of_skypilots_copy_command_is_422(
    app_client: tuple[TestClient, Settings], probes: Probes
) -> None:
    """The defect the probes found: SkyPilot pastes file-mount sources unquoted into
    `aws s3 cp`, and `;{touch,x};` or a backtick passed the old `[^\\s]*` bucket pattern."""
    client, _ = app_client
    marker = probes.marker("bucket-regression", "brace")
    for source in (
        f"s3://bucket/x;{{touch,{marker}}};.jsonl",
        f"s3://bucket/`{{touch,{marker}}}`.jsonl",
        "s3://bucket/x|reboot.jsonl",
        "s3://bucket/x&reboot&.jsonl",
        "s3://bucket/x>y.jsonl",
        "s3://bucket/*.jsonl",
    ):
        response = post_json(client, "/api/v1/jobs", job_body(dataset=source, executor="skypilot"))
        assert response.status_code == 422, (source, response.text)
        assert response.json()["detail"]["code"] == "invalid_dataset"
    ok = post_json(
        client,
        "/api/v1/jobs",
        job_body(dataset="s3://bucket/sft/v=2,a+b@c:d%20-e_f.jsonl", executor="skypilot"),
    )
    assert ok.status_code == 202, ok.text
    assert not probes.fired()


def test_a_one_megabyte_value_in_any_field_is_413_under_the_default_limit(
    client: TestClient, settings: Settings
) -> None:
    assert settings.max_body_bytes == MB
    for field, body_for in FIELDS.items():
        response = post_json(client, "/api/v1/jobs", job_body(**body_for(ONE_MB)))
        assert response.status_code == 413, (field, response.status_code)
        assert response.json()["detail"]["code"] == "body_too_large"
    assert client.get("/api/v1/jobs").json()["data"] == []
