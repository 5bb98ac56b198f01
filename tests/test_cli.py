"""The `ainfinity` command, run as a subprocess against a real uvicorn server where tiny
jobs really train: launch from YAML with --set, list, get, watch (exit status by outcome),
logs (tail and follow), metrics, cancel, delete, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ainfinity.cli.spec import SpecError, apply_override, load_spec, parse_scalar
from ainfinity.client import Client
from tests.builders import API_KEY, ROOT, SAMPLE_SFT
from tests.servers import UvicornServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    home = tmp_path_factory.mktemp("cli") / "home"
    env = {
        "AINFINITY_LOCAL_MAX_JOBS": "1",
        "AINFINITY_RECONCILE_INTERVAL_SECONDS": "0.2",
        "AINFINITY_LOCAL_CANCEL_GRACE_SECONDS": "2",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    with UvicornServer(home, env=env) as running:
        yield running


def cli_command(server: UvicornServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "ainfinity", "--url", server.url, *args]


def cli_env() -> dict[str, str]:
    # The key comes from the environment, as a user would set it; the URL from --url.
    return {**os.environ, "AINFINITY_API_KEY": API_KEY, "AINFINITY_URL": "http://127.0.0.1:9"}


def cli(server: UvicornServer, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(server, *args),
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "job.yaml"
    spec = {
        "model": "tiny-random-llama",
        "dataset": str(SAMPLE_SFT),
        "hyperparameters": {
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 0.001,
            "max_seq_length": 128,
            "logging_steps": 2,
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def trained(server: UvicornServer, spec_file: Path) -> dict[str, str]:
    """`cli-train`, launched with overrides and watched to its end, its log followed live."""
    launched = cli(
        server,
        "jobs", "launch", "-f", str(spec_file), "--name", "cli-train",
        "--set", "hyperparameters.max_steps=8",
        "--set", "hyperparameters.learning_rate=2e-3",
        "--set", "metadata.origin=cli",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    follower = subprocess.Popen(
        cli_command(server, "jobs", "logs", "cli-train", "--follow"),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = cli(server, "jobs", "watch", "cli-train", "--interval", "0.3", timeout=180)
    followed, follow_err = follower.communicate(timeout=60)
    return {
        "launch": launched.stdout,
        "watch": watched.stdout + watched.stderr,
        "watch_rc": str(watched.returncode),
        "followed": followed,
        "follow_rc": str(follower.returncode),
        "follow_err": follow_err,
    }


def test_launch_applies_overrides_and_watch_exits_0_on_success(
    trained: dict[str, str], server: UvicornServer
) -> None:
    assert "cli-train" in trained["launch"] and "PENDING" in trained["launch"]
    assert trained["watch_rc"] == "0", trained["watch"]
    assert "SUCCEEDED" in trained["watch"]
    with Client(server.url, API_KEY) as client:
        job = client.get_job("cli-train")
    assert job.spec.hyperparameters.max_steps == 8
    assert job.spec.hyperparameters.learning_rate == pytest.approx(2e-3)
    assert job.spec.hyperparameters.batch_size == 4  # from the file
    assert job.spec.metadata == {"origin": "cli"}


def test_logs_follow_streams_until_the_job_ends(
    trained: dict[str, str], server: UvicornServer
) -> None:
    assert trained["follow_rc"] == "0", trained["follow_err"]
    # The follower started before the run did and still saw its last step (protocol lines,
    # such as `ainfinity-done`, are left out as in `jobs logs` without --raw).
    assert "step 8/8" in trained["followed"] and "ainfinity-" not in trained["followed"]
    with Client(server.url, API_KEY) as client:
        whole = client.logs("cli-train")
    assert trained["followed"].splitlines() == whole.splitlines()


def test_logs_tail(trained: dict[str, str], server: UvicornServer) -> None:
    result = cli(server, "jobs", "logs", "cli-train", "--tail", "3")
    assert result.returncode == 0, result.stderr
    with Client(server.url, API_KEY) as client:
        whole = client.logs("cli-train")
    assert result.stdout.splitlines() == whole.splitlines()[-3:]


def test_list_and_get(trained: dict[str, str], server: UvicornServer) -> None:
    table = cli(server, "jobs", "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "EXECUTOR", "MODEL", "STEP", "LOSS", "CREATED"]
    row = next(line.split() for line in rows if line.startswith("cli-train "))
    assert row[:5] == ["cli-train", "SUCCEEDED", "local", "tiny-random-llama", "8/8"]

    listed = cli(server, "jobs", "list", "--status", "succeeded", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "cli-train" in [job["name"] for job in json.loads(listed.stdout)]
    pending = cli(server, "jobs", "list", "--status", "PENDING", "--json")
    assert "cli-train" not in [job["name"] for job in json.loads(pending.stdout)]

    detail = cli(server, "jobs", "get", "cli-train")
    assert detail.returncode == 0, detail.stderr
    fields = dict(line.split(None, 1) for line in detail.stdout.splitlines() if line.strip())
    assert fields["status"] == "SUCCEEDED"
    assert fields["step"] == "8/8"
    as_json = json.loads(cli(server, "jobs", "get", "cli-train", "--json").stdout)
    assert as_json["status"] == "SUCCEEDED" and as_json["progress"]["step"] == 8


def test_metrics_table_and_json(trained: dict[str, str], server: UvicornServer) -> None:
    table = cli(server, "jobs", "metrics", "cli-train")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["STEP", "EPOCH", "LOSS"]
    records = json.loads(cli(server, "jobs", "metrics", "cli-train", "--json").stdout)
    train_steps = [m["step"] for m in records if m["loss"] is not None]
    assert train_steps == [2, 4, 6, 8]
    assert [int(row.split()[0]) for row in rows] == [m["step"] for m in records]


def test_watch_of_a_cancelled_job_exits_4(
    trained: dict[str, str], server: UvicornServer, spec_file: Path
) -> None:
    launched = cli(
        server, "jobs", "launch", "-f", str(spec_file), "--name", "cli-cancel",
        "--set", "hyperparameters.max_steps=5000", "--json",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["name"] == "cli-cancel"
    watcher = subprocess.Popen(
        cli_command(server, "jobs", "watch", "cli-cancel", "--interval", "0.2"),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cancelled = cli(server, "jobs", "cancel", "cli-cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split()[0] == "cli-cancel"
    assert cancelled.stdout.split()[1] in ("CANCELLING", "CANCELLED")
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 4, out + err
    assert "CANCELLED" in out

    deleted = cli(server, "jobs", "delete", "cli-cancel")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "cli-cancel deleted")
    gone = cli(server, "jobs", "get", "cli-cancel")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "error job_not_found: No job named 'cli-cancel'."


def test_api_errors_print_their_code_without_a_traceback(
    server: UvicornServer, spec_file: Path
) -> None:
    unknown = cli(server, "jobs", "watch", "no-such-job")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error job_not_found: ")
    assert "Traceback" not in unknown.stderr + unknown.stdout

    invalid = cli(
        server, "jobs", "launch", "-f", str(spec_file),
        "--set", "hyperparameters.learning_rate=5", "--set", "hyperparameters.batch_size=0",
    )  # fmt: skip
    assert invalid.returncode == 1
    first, *details = invalid.stderr.splitlines()
    assert first.startswith("error validation_error: hyperparameters.")
    # Every failing field, one per line.
    assert sorted(line.split(":")[0].strip() for line in details) == [
        "hyperparameters.batch_size",
        "hyperparameters.learning_rate",
    ]

    wrong_key = subprocess.run(
        cli_command(server, "--api-key", "wrong-key-0123456789", "jobs", "list"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.startswith("error unauthorized: ")

    unreadable = cli(server, "jobs", "launch", "-f", str(spec_file.with_name("missing.yaml")))
    assert unreadable.returncode == 2
    assert unreadable.stderr.startswith("error invalid_spec_file: cannot read ")


def test_spec_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"model": "m", "dataset": "d", "hyperparameters": {"seed": 1}}))
    spec = load_spec(
        str(path),
        [
            "hyperparameters.learning_rate=1e-4",
            "hyperparameters.packing=true",
            "resources.accelerators=A100:8",
            "lora.target_modules=[q_proj, v_proj]",
            "metadata.note='1e-4'",
            "validation_dataset=null",
        ],
        name="renamed",
    )
    assert spec == {
        "model": "m",
        "dataset": "d",
        "name": "renamed",
        "hyperparameters": {"seed": 1, "learning_rate": 1e-4, "packing": True},
        "resources": {"accelerators": "A100:8"},
        "lora": {"target_modules": ["q_proj", "v_proj"]},
        "metadata": {"note": "1e-4"},
        "validation_dataset": None,
    }
    assert parse_scalar("60") == 60 and parse_scalar("-2.5E+3") == -2500.0
    with pytest.raises(SpecError, match="not a mapping"):
        apply_override({"model": "m"}, "model.name=x")
    with pytest.raises(SpecError, match="expected key=value"):
        apply_override({}, "hyperparameters.max_steps")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_spec(str(tmp_path / "list.yaml"), [])
