"""Hostile strings in every header, path and query parameter of every route, and jobs
carrying them that really run through the local executor: nothing runs, nothing escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.jobs.task_render import load_template
from tests.builders import SAMPLE_SFT, job_body, wait_for, write_jsonl
from tests.probes import (
    DEAD_WEBHOOK,
    LONG_URL_PART,
    ONE_MB,
    PROBES,
    TERMINAL,
    Probes,
    marker_probes,
    post_json,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probes]:
    yield from marker_probes(tmp_path_factory)


# -- every header, path and query parameter of every route ---------------------------------


@dataclass(frozen=True)
class Param:
    method: str
    path: str
    where: str  # "path", "query" or "header"
    name: str

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} {self.where}:{self.name}"


def declared_params() -> list[Param]:
    """Every parameter of every operation the app declares, plus the two key headers."""
    home = Path("/nonexistent/ainfinity-openapi-only")
    document = create_app(Settings(_env_file=None, home=home)).openapi()  # type: ignore[call-arg]
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                found.append(Param(method.upper(), path, parameter["in"], parameter["name"]))
            if operation.get("security"):
                found.append(Param(method.upper(), path, "header", "X-API-Key"))
                found.append(Param(method.upper(), path, "header", "Authorization"))
    return found


PARAMS = declared_params()


def wire(value: str) -> bytes:
    # Lone surrogates travel as the bytes a careless client would send for them.
    return value.encode("utf-8", "surrogatepass")


def send_probe(client: TestClient, param: Param, value: str) -> Any:
    # An unknown job name: were a probe ever accepted, no stream would be held open.
    path = param.path.replace("{name}", "no-such-job")
    headers: dict[str, str | bytes] = {}
    query = ""
    if param.where == "path":
        path = param.path.replace(f"{{{param.name}}}", quote(wire(value), safe=""))
    elif param.where == "query":
        query = f"?{param.name}={quote(wire(value), safe='')}"
    elif param.name == "Authorization":
        headers["Authorization"] = b"Bearer " + wire(value)
        headers["X-API-Key"] = b""
    else:
        headers[param.name] = wire(value)
    body = json.dumps(job_body()) if param.method in ("POST", "PUT", "PATCH") else None
    if body is not None:
        headers["Content-Type"] = "application/json"
    return client.request(param.method, path + query, content=body, headers=headers)


@pytest.mark.parametrize("param", PARAMS, ids=[param.id for param in PARAMS])
def test_every_probe_in_every_parameter_is_refused_or_kept_opaque(
    param: Param, probes: Probes, client: TestClient, settings: Settings
) -> None:
    problems = []
    accepted = 0
    for probe in [*PROBES, "1mb"]:
        if probe == "1mb":
            value = ONE_MB if param.where == "header" else LONG_URL_PART
        else:
            value = probes.value(param.id, probe)
        response = send_probe(client, param, value)
        where = f"{param.id} / {probe}"
        if "x-injected" in response.headers:
            problems.append(f"{where}: a header was injected into the answer")
        if 400 <= response.status_code < 500:
            # The OpenAI-compatible routes answer in OpenAI's error shape.
            shape = "error" if param.path.startswith("/v1/") else "detail"
            if shape not in response.json():
                problems.append(f"{where}: error body {response.text[:200]}")
        elif response.status_code < 300 and param.name == "Idempotency-Key":
            # An opaque token: printable ASCII probes are valid keys, kept only as a hash.
            accepted += 1
        else:
            problems.append(f"{where}: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
    kept = sorted(p.name for p in (settings.home / "idempotency").glob("*"))
    assert len(kept) == accepted
    assert all(re.fullmatch(r"[0-9a-f]{64}\.json", name) for name in kept), kept
    if param.name != "Idempotency-Key":
        assert client.get("/api/v1/jobs").json()["data"] == []
    assert not probes.fired(), f"probes executed: {probes.fired()}"


# -- jobs that carry probes really run ---------------------------------------------------


def test_jobs_carrying_probes_run_through_the_local_executor_and_nothing_fires(
    runner: TestClient, runner_settings: Settings, probes: Probes, tmp_path: Path
) -> None:
    # Dataset files whose very names are shell code (markers relative to the job's cwd).
    relative = "ainfinity-marker-from-a-file-name"
    train = write_jsonl(
        tmp_path / f"$(touch {relative})`touch {relative}`;{{touch,{relative}}};.jsonl",
        [json.loads(line) for line in SAMPLE_SFT.read_text().splitlines() if line.strip()],
    )
    # Every probe a metadata value can hold (NUL bytes and lone surrogates are refused).
    texts = [p for p in PROBES if p not in ("nul", "nul-truncation", "lone-surrogate")]
    texts.remove("lone-low-surrogate")
    half = len(texts) // 2
    bodies = [
        job_body(
            name="probes-a",
            dataset=str(train),
            validation_dataset=str(train),
            metadata={f"p{i}": probes.value("run.metadata", p) for i, p in enumerate(texts[:half])},
            webhook_url=DEAD_WEBHOOK + probes.value("run.webhook", "ifs-no-space"),
            hyperparameters={"max_steps": 2, "batch_size": 2, "max_seq_length": 64},
        ),
        job_body(
            name="probes-b",
            method="lora",
            metadata={f"p{i}": probes.value("run.metadata", p) for i, p in enumerate(texts[half:])},
            hyperparameters={"max_steps": 2, "batch_size": 2, "max_seq_length": 64},
        ),
    ]
    for body in bodies:
        response = post_json(runner, "/api/v1/jobs", body)
        assert response.status_code == 202, response.text
    template = load_template()
    for body in bodies:
        job = wait_for(runner, body["name"], TERMINAL, timeout=150)
        assert job["status"] == "SUCCEEDED", job
        assert job["spec"]["metadata"] == body["metadata"]
        job_dir = runner_settings.home / "jobs" / body["name"]
        # The script the job ran is the template's, byte for byte.
        assert (job_dir / "run.sh").read_text() == template["run"]
        config = json.loads((job_dir / "workdir" / "job_config.json").read_text())
        assert config["metadata"] == body["metadata"]
    assert not probes.fired(), f"probes executed: {probes.fired()}"
    # The file-name markers are relative: they would land in a job's or the server's cwd.
    leaked = [*tmp_path.rglob(relative), *runner_settings.home.rglob(relative)]
    assert not leaked and not (Path.cwd() / relative).exists(), leaked
