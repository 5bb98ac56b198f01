"""Hostile strings in every string a client controls: nothing runs, nothing escapes.

Each probe tries to create its own marker file (named after the field and the probe) when
a shell or a YAML loader ever interprets it. Every field of a job body, every header, path
and query parameter of every route gets every probe; each answer must be a 4xx, or a 2xx
whose stored value is inert: the rendered task loads back as one YAML document with the
value only where it belongs (never inside a script), and SkyPilot's own copy command for a
bucket dataset runs without the value breaking out of its argument. Jobs carrying probes
then really run through the local executor. No marker may ever appear.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.services.task_render import load_template
from tests.builders import API_KEY, SAMPLE_SFT, job_body, wait_for, write_jsonl
from tests.conftest import MakeSettings
from tests.sky_fake import RecordingSkyPilot

pytestmark = pytest.mark.timeout(180)

MB = 1_048_576
# Replaced in each probe by the absolute path of its marker file.
MARKER = "@MARKER@"
# Replaced by an existing JSONL file outside every data dir.
OUTSIDE = "@OUTSIDE@"
# A closed port on loopback: a stored webhook can never reach anything.
DEAD_WEBHOOK = "http://127.0.0.1:9/"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}

PROBES: dict[str, str] = {
    # Shell metacharacters, with and without spaces (patterns that forbid whitespace
    # still let `;{touch,x};` and `${IFS}` through).
    "dollar-paren": f"$(touch {MARKER})",
    "backticks": f"`touch {MARKER}`",
    "semicolon": f"; touch {MARKER}",
    "pipe": f"| touch {MARKER}",
    "and": f"x && touch {MARKER}",
    "or": f"false || touch {MARKER}",
    "quote-break": f"'; touch {MARKER}; echo '",
    "double-quote-break": f'"; touch {MARKER}; echo "',
    "newline": f"x\ntouch {MARKER}\n",
    "brace-no-space": f";{{touch,{MARKER}}};",
    "ifs-no-space": f"$(touch${{IFS}}{MARKER})",
    "backtick-brace": f"`{{touch,{MARKER}}}`",
    "redirect": f">{MARKER}",
    "process-substitution": f"<(touch {MARKER})",
    # YAML: tags, a second document, anchors and aliases, flow and block styles.
    "yaml-python-tag": f"--- !!python/object/apply:os.system ['touch {MARKER}']",
    "yaml-second-document": f"key: v\n---\nrun: touch {MARKER}",
    "yaml-anchor-alias": f"&a touch {MARKER}\nrun: *a",
    "yaml-flow-mapping": f"{{run: touch {MARKER}, setup: touch {MARKER}}}",
    "yaml-block-scalar": f"|\n  touch {MARKER}",
    # Paths out of the data dirs.
    "dotdot": "../../../../../../../../etc/passwd",
    "absolute-outside": OUTSIDE,
    "climb-out-of-samples": "@CLIMB@",
    "home-dir": "~/.ssh/id_rsa",
    "file-url": "file:///etc/passwd",
    "proc": "/proc/self/environ",
    # NUL bytes.
    "nul": "a\x00b",
    "nul-truncation": f"{SAMPLE_SFT}\x00.txt",
    # Unicode: direction override, zero-width, emoji, lone surrogates (sent as JSON
    # escapes), a BOM, YAML's other line breaks (U+2028, NEL), full-width lookalikes.
    "rtl-override": "\u202elnosj.exe",
    "zero-width": "tiny\u200b-random\u200d-llama",
    "emoji": "\U0001f600\U0001f525",
    "lone-surrogate": "\ud800",
    "lone-low-surrogate": "x\udfffx",
    "bom": "\ufefftiny-random-llama",
    "line-separator": f"a\u2028run: touch {MARKER}",
    "next-line": f"a\x85run: touch {MARKER}",
    "fullwidth": "\uff1b\uff54\uff4f\uff55\uff43\uff48",
    # CR/LF: header splitting, raw and percent-encoded.
    "crlf": "x\r\nX-Injected: 1",
    "crlf-encoded": "x%0d%0aX-Injected:%201",
}
# Kept apart: near the default 1 MiB body limit a 413 is a valid answer (see below).
ONE_MB = "A" * MB
# httpx (like every HTTP server's request-line limit) refuses URLs over 64 kB: the
# biggest a path or query probe can be.
LONG_URL_PART = "A" * 60_000


@dataclass(frozen=True)
class Probes:
    """Where markers go, and the probes with their placeholders filled in."""

    markers: Path
    outside: Path

    def marker(self, where: str, probe: str) -> Path:
        return self.markers / f"{where}.{probe}"

    def value(self, where: str, probe: str) -> str:
        climb = os.path.relpath(self.outside, SAMPLE_SFT.parent)
        return (
            PROBES[probe]
            .replace(MARKER, str(self.marker(where, probe)))
            .replace(OUTSIDE, str(self.outside))
            .replace("@CLIMB@", f"{SAMPLE_SFT.parent}/{climb}")
        )

    def fired(self) -> list[str]:
        return sorted(path.name for path in self.markers.iterdir())


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probes]:
    # Outside the data dirs: each test's data dir is its own tmp_path, a sibling of this.
    root = tmp_path_factory.mktemp("injection")
    markers = root / "markers"
    markers.mkdir()
    outside = write_jsonl(root / "outside.jsonl", [{"text": "secret"}] * 4)
    found = Probes(markers=markers, outside=outside)
    yield found
    assert not found.fired(), f"probes executed: {found.fired()}"


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


def post_json(client: TestClient, url: str, body: Any, **headers: str | bytes) -> Any:
    # json.dumps escapes lone surrogates as \ud800 (valid JSON text); httpx's json= would
    # fail to encode them before sending.
    return client.post(
        url, content=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )


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
            if "detail" not in response.json():
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
