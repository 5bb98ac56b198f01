"""What a SkyPilot job's task looks like, checked by SkyPilot's own parser and validators.

Everything runs offline: SkyPilot reads the small catalog copied from
tests/fixtures/sky_runtime (see conftest), and no API server or cloud is involved.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity import __version__
from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.exceptions import InvalidDataset, InvalidSpec
from ainfinity.executors.sky_catalog import validate_task
from ainfinity.jobs.task_render import (
    RenderedJob,
    dump_task,
    job_config,
    load_template,
    render_job,
    render_task,
)
from ainfinity.schema.job import JobSpec, TrainingModel
from ainfinity.store.job_files import JobPaths
from tests.builders import API_KEY, SAMPLE_SFT, SAMPLE_TEXT, job_body
from tests.conftest import MakeSettings
from tests.sky_fake import RecordingSkyPilot

TEMPLATE = load_template()
HOSTILE = [
    'it\'s "quoted"',
    "line one\nline two\r\n",
    "$(touch /tmp/ainfinity-pwned) `id` ${HOME}",
    "--- !!python/object/apply:os.system ['id']",
    "run: |\n  rm -rf /",
]


def spec_of(**overrides: Any) -> JobSpec:
    """A SkyPilot job's spec as the service builds it (dataset paths already resolved)."""
    return JobSpec.model_validate(
        {**job_body(), "name": "sky-task", "executor": "skypilot", **overrides}
    )


def trained_from(spec: JobSpec) -> TrainingModel:
    return TrainingModel(load=spec.model, tokenizer=spec.model, base_model=spec.model)


def render(
    spec: JobSpec,
    *,
    pip_spec: str | None = None,
    wheel: Path | None = None,
    root: Path | None = None,
) -> RenderedJob:
    paths = JobPaths(root or Path("/srv/ainfinity/jobs") / spec.name)
    return render_job(TEMPLATE, spec, paths, trained_from(spec), pip_spec=pip_spec, wheel=wheel)


class TestRenderLocalJob:
    def test_is_todays_task_and_config(self, tmp_path: Path) -> None:
        spec = spec_of(executor="local")
        paths = JobPaths(tmp_path / "job")
        model = trained_from(spec)
        rendered = render_job(TEMPLATE, spec, paths, model, pip_spec="ainfinity @ https://x/y.whl")
        assert rendered.task == render_task(TEMPLATE, spec, workdir=paths.workdir)
        assert rendered.job_config == job_config(spec, model, output_dir=str(paths.output))
        assert rendered.output_dir == str(paths.output)
        assert rendered.job_config["dataset"] == str(SAMPLE_SFT)
        assert "file_mounts" not in rendered.task
        assert "job_recovery" not in rendered.task["resources"]
        assert rendered.task["envs"]["AINFINITY_PIP_SPEC"] == f"ainfinity=={__version__}"


class TestRenderSkyPilotJob:
    @pytest.mark.parametrize("num_nodes", [1, 2])
    def test_validates_for_one_and_two_nodes(self, num_nodes: int) -> None:
        rendered = render(spec_of(resources={"accelerators": "A100:8", "num_nodes": num_nodes}))
        assert rendered.task["num_nodes"] == num_nodes
        assert rendered.task["resources"]["accelerators"] == "A100:8"
        validate_task(rendered.task)

    def test_spot_and_restarts_become_job_recovery(self) -> None:
        resources = {"accelerators": "H100:8", "use_spot": True, "max_restarts_on_errors": 3}
        task = render(spec_of(resources=resources)).task
        assert task["resources"]["use_spot"] is True
        assert task["resources"]["job_recovery"] == {
            "strategy": "EAGER_NEXT_REGION",
            "max_restarts_on_errors": 3,
        }
        validate_task(task)

    def test_without_restarts_recovers_preemptions_only(self) -> None:
        task = render(spec_of()).task
        assert task["resources"]["job_recovery"]["max_restarts_on_errors"] == 0
        assert "use_spot" not in task["resources"]
        validate_task(task)

    def test_pinned_cloud_and_region_validate(self) -> None:
        resources = {"accelerators": "A100:8", "cloud": "aws", "region": "us-west-2"}
        validate_task(render(spec_of(resources=resources)).task)

    def test_local_datasets_are_uploaded_to_node_paths(self) -> None:
        rendered = render(spec_of(validation_dataset=str(SAMPLE_TEXT)))
        assert rendered.task["file_mounts"] == {
            "ainfinity-inputs/train.jsonl": str(SAMPLE_SFT),
            "ainfinity-inputs/validation.jsonl": str(SAMPLE_TEXT),
        }
        assert rendered.job_config["dataset"] == "ainfinity-inputs/train.jsonl"
        assert rendered.job_config["validation_dataset"] == "ainfinity-inputs/validation.jsonl"
        validate_task(rendered.task)

    def test_bucket_datasets_are_copied_as_files(self) -> None:
        rendered = render(
            spec_of(dataset="s3://corpus/sft/train.jsonl", validation_dataset="gs://corpus/v.json")
        )
        # The plain form: SkyPilot copies one object to the path (a prefix would be a folder).
        assert rendered.task["file_mounts"] == {
            "ainfinity-inputs/train.jsonl": "s3://corpus/sft/train.jsonl",
            "ainfinity-inputs/validation.json": "gs://corpus/v.json",
        }
        assert rendered.job_config["dataset"] == "ainfinity-inputs/train.jsonl"
        validate_task(rendered.task)

    def test_a_bucket_prefix_is_not_a_dataset(self) -> None:
        with pytest.raises(InvalidDataset, match="one JSONL file"):
            render(spec_of(dataset="s3://corpus/sft"))

    def test_a_dollar_in_a_dataset_path_is_refused(self) -> None:
        # SkyPilot expands $VARS in file-mount paths; that file would not be the one asked for.
        with pytest.raises(InvalidDataset, match=r"\$"):
            render(spec_of(dataset="s3://corpus/$AINFINITY_PIP_SPEC/train.jsonl"))

    @pytest.mark.parametrize(
        ("output_uri", "source", "node_output"),
        [
            (
                "s3://ckpts/runs/llama-sft-1",
                "s3://ckpts",
                "/ainfinity/buckets/ckpts/runs/llama-sft-1",
            ),
            ("gs://ckpts/", "gs://ckpts", "/ainfinity/buckets/ckpts"),
            ("r2://ckpts/a/b", "r2://ckpts", "/ainfinity/buckets/ckpts/a/b"),
            ("cos://us-east/ckpts/run", "cos://us-east/ckpts", "/ainfinity/buckets/ckpts/run"),
        ],
    )
    def test_output_uri_mounts_the_bucket(
        self, output_uri: str, source: str, node_output: str
    ) -> None:
        rendered = render(spec_of(output_uri=output_uri))
        mount_point = node_output.split("/")[:4]
        assert rendered.task["file_mounts"]["/".join(mount_point)] == {
            "source": source,
            "mode": "MOUNT",
        }
        assert rendered.job_config["output_dir"] == node_output
        assert rendered.output_dir == output_uri.rstrip("/")
        validate_task(rendered.task)

    def test_without_output_uri_the_output_stays_on_the_node(self) -> None:
        rendered = render(spec_of())
        # Relative to the workdir `run:` starts in; the record says where that is.
        assert rendered.job_config["output_dir"] == "output"
        assert rendered.output_dir == "~/sky_workdir/output"
        assert list(rendered.task["file_mounts"]) == ["ainfinity-inputs/train.jsonl"]

    def test_output_uri_may_not_climb_out_of_its_folder(self) -> None:
        with pytest.raises(InvalidSpec, match="output_uri"):
            render(spec_of(output_uri="s3://ckpts/runs/../../etc"))

    def test_pip_spec_setting_replaces_the_default(self) -> None:
        assert render(spec_of()).task["envs"]["AINFINITY_PIP_SPEC"] == f"ainfinity=={__version__}"
        wheel = "ainfinity @ https://wheels.internal/ainfinity-0.1.0-py3-none-any.whl"
        assert render(spec_of(), pip_spec=wheel).task["envs"]["AINFINITY_PIP_SPEC"] == wheel

    def test_the_servers_wheel_is_uploaded_and_installed_from_its_node_path(
        self, tmp_path: Path
    ) -> None:
        wheel = tmp_path / "ainfinity-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"PK")
        task = render(spec_of(), wheel=wheel).task
        node_path = "ainfinity-inputs/ainfinity-0.1.0-py3-none-any.whl"
        assert task["file_mounts"][node_path] == str(wheel)
        # A relative path: pip installs that file; setup: starts in the workdir, where
        # SkyPilot puts relative file-mount destinations.
        assert task["envs"]["AINFINITY_PIP_SPEC"] == f"./{node_path}"
        validate_task(task)
        # A pip spec, when configured, wins: nothing is uploaded.
        task = render(spec_of(), pip_spec="ainfinity==0.1.0", wheel=wheel).task
        assert list(task["file_mounts"]) == ["ainfinity-inputs/train.jsonl"]

    def test_node_paths_need_no_root_on_the_node(self, tmp_path: Path) -> None:
        # SkyPilot creates an absolute destination with `sudo mkdir`, which the users of a
        # Slurm cluster do not have (the launch is then retried forever).
        wheel = tmp_path / "ainfinity-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"PK")
        rendered = render(spec_of(validation_dataset=str(SAMPLE_TEXT)), wheel=wheel)
        assert not any(dst.startswith("/") for dst in rendered.task["file_mounts"])
        assert not rendered.job_config["dataset"].startswith("/")

    def test_a_shared_directory_is_the_output_as_it_is(self) -> None:
        rendered = render(spec_of(output_uri="file:///shared/runs/llama-sft-1/"))
        assert rendered.job_config["output_dir"] == "/shared/runs/llama-sft-1"
        assert rendered.output_dir == "/shared/runs/llama-sft-1"
        assert list(rendered.task["file_mounts"]) == ["ainfinity-inputs/train.jsonl"]
        validate_task(rendered.task)

    @pytest.mark.parametrize(
        "output_uri", ["file:///shared/../etc", "file:///shared/./x", "file:///shared//x"]
    )
    def test_a_shared_directory_must_be_a_plain_path(self, output_uri: str) -> None:
        with pytest.raises(InvalidSpec, match="output_uri"):
            render(spec_of(output_uri=output_uri))

    @pytest.mark.parametrize("value", HOSTILE)
    def test_user_values_stay_data(self, value: str) -> None:
        rendered = render(
            spec_of(
                metadata={"note": value},
                resources={"accelerators": "A100:8", "num_nodes": 2, "use_spot": True},
                output_uri="s3://ckpts/runs/x",
            )
        )
        text = dump_task(rendered.task)
        assert value not in text
        task = yaml.safe_load(text)
        assert task == rendered.task
        assert task["run"] == TEMPLATE["run"] and task["setup"] == TEMPLATE["setup"]
        assert rendered.job_config["metadata"] == {"note": value}
        validate_task(task)

    def test_file_mounts_follow_the_workdir(self) -> None:
        keys = list(render(spec_of()).task)
        assert keys.index("file_mounts") == keys.index("workdir") + 1


def valid_task() -> dict[str, Any]:
    return render(
        spec_of(resources={"accelerators": "A100:8"}, output_uri="s3://ckpts/runs/x")
    ).task


def with_changes(changes: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """A valid rendered task with values put straight in, where only SkyPilot judges them."""
    task = valid_task()
    for path, value in changes.items():
        *parents, key = path
        target = task
        for parent in parents:
            target = target[parent]
        target[key] = value
    return task


class TestValidateTask:
    def test_accepts_a_rendered_task_and_leaves_it_unchanged(self) -> None:
        task = valid_task()
        before = copy.deepcopy(task)
        validate_task(task)
        assert task == before

    def test_our_schema_refuses_a_word_for_a_count_first(self, client: TestClient) -> None:
        # Layer 1: the API's own pattern; the body never reaches SkyPilot.
        body = job_body(executor="skypilot", resources={"accelerators": "A100:eight"})
        response = client.post("/api/v1/jobs", json=body)
        assert response.status_code == 422
        assert response.json()["detail"]["code"] == "validation_error"

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({("resources", "accelerators"): "A100:eight"}, "accelerators"),
            ({("num_nodes",): 0}, "num_nodes"),
            ({("surprise",): 1}, "surprise"),
            ({("resources", "surprise"): 1}, "surprise"),
            ({("file_mounts", "ainfinity-inputs/x.jsonl"): "/no/such/file.jsonl"}, "not exist"),
            ({("file_mounts", "ainfinity-inputs/dir"): "/srv/data/"}, "slash"),
            ({("resources", "job_recovery"): {"strategy": "PRAY"}}, "PRAY"),
            ({("resources", "cloud"): "nocloud"}, "nocloud"),
            ({("resources", "cloud"): "gcp", ("resources", "region"): "us-west-2"}, "region"),
            ({("file_mounts", "ainfinity-inputs/az.jsonl"): "az://c/data.jsonl"}, "az://"),
            (
                {
                    ("file_mounts", "/ainfinity/buckets/ckpts"): {
                        "source": "s3://ckpts/runs/x",
                        "mode": "MOUNT",
                    }
                },
                "MOUNT mode",
            ),
        ],
    )
    def test_skypilot_refusals_are_invalid_spec(
        self, changes: dict[tuple[str, ...], Any], reason: str
    ) -> None:
        # Layer 2: values SkyPilot's code alone judges (our schema never lets most through).
        with pytest.raises(InvalidSpec) as caught:
            validate_task(with_changes(changes))
        message = caught.value.detail_msg
        assert message.startswith("SkyPilot rejects the task: ")
        assert reason in message
        assert caught.value.status_code == 422
        assert "\n" not in message and "\x1b" not in message

    def test_a_region_needs_its_cloud(self) -> None:
        with pytest.raises(InvalidSpec, match="resources.cloud"):
            validate_task(with_changes({("resources", "region"): "us-east-1"}))


@pytest.fixture
def sky_client(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(executor="skypilot", skypilot_poll_seconds=0.05)
    app = create_app(settings, skypilot_sdk=RecordingSkyPilot())
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client, settings


class TestCreateSkyPilotJobOverHttp:
    @pytest.mark.parametrize(
        ("overrides", "code"),
        [
            ({"resources": {"cloud": "nocloud"}}, "invalid_spec"),
            ({"resources": {"cloud": "gcp", "region": "mars-1"}}, "invalid_spec"),
            ({"resources": {"region": "us-east-1"}}, "invalid_spec"),
            # SkyPilot 0.14 takes no az:// URIs; our own checks refuse them first.
            ({"output_uri": "az://container/runs/x"}, "validation_error"),
            ({"validation_dataset": "az://container/val.jsonl"}, "invalid_dataset"),
        ],
    )
    def test_a_task_skypilot_refuses_is_422_and_nothing_is_stored(
        self, sky_client: tuple[TestClient, Settings], overrides: dict[str, Any], code: str
    ) -> None:
        client, settings = sky_client
        response = client.post("/api/v1/jobs", json=job_body(name="refused", **overrides))
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["code"] == code
        assert not (settings.home / "jobs" / "refused").exists()

    def test_an_accepted_job_stores_the_rendered_task(
        self, sky_client: tuple[TestClient, Settings]
    ) -> None:
        client, settings = sky_client
        body = job_body(
            name="accepted",
            resources={"accelerators": "A100:8", "num_nodes": 2, "max_restarts_on_errors": 2},
            output_uri="s3://ckpts/runs/accepted",
            metadata={"note": HOSTILE[2]},
        )
        response = client.post("/api/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        assert response.json()["output_dir"] == "s3://ckpts/runs/accepted"
        job_dir = settings.home / "jobs" / "accepted"
        task = yaml.safe_load((job_dir / "task.yaml").read_text())
        assert task["file_mounts"]["ainfinity-inputs/train.jsonl"] == str(SAMPLE_SFT)
        assert task["resources"]["job_recovery"]["max_restarts_on_errors"] == 2
        config = json.loads((job_dir / "workdir" / "job_config.json").read_text())
        assert config["dataset"] == "ainfinity-inputs/train.jsonl"
        assert config["output_dir"] == "/ainfinity/buckets/ckpts/runs/accepted"
        # By default a node installs this server's own ainfinity, uploaded with the task.
        node_wheel = f"ainfinity-inputs/ainfinity-{__version__}-py3-none-any.whl"
        assert task["envs"]["AINFINITY_PIP_SPEC"] == f"./{node_wheel}"
        wheel = Path(task["file_mounts"][node_wheel])
        assert wheel.is_file() and wheel.is_relative_to(settings.home / "wheels")
        validate_task(task)
