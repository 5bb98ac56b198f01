"""The jobs API contract, over HTTP, with jobs held in the queue (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.jobs.task_render import load_template
from ainfinity.schema.job import JOB_NAME_RE
from tests.builders import API_KEY, SAMPLE_SFT, job_body, write_jsonl
from tests.conftest import MakeSettings
from tests.sky_fake import RecordingSkyPilot


def error_code(response: object) -> str:
    return response.json()["detail"]["code"]  # type: ignore[attr-defined, no-any-return]


def assert_nothing_written(settings: Settings) -> None:
    jobs = settings.home / "jobs"
    assert list(jobs.iterdir()) == []
    assert list((settings.home / "staging").iterdir()) == []


class TestCreateJob:
    def test_returns_202_with_the_job(self, client: TestClient, settings: Settings) -> None:
        response = client.post("/api/v1/jobs", json=job_body(name="first-job"))
        assert response.status_code == 202
        job = response.json()
        assert job["name"] == "first-job"
        assert job["status"] == "PENDING"
        assert job["executor"] == "local"
        assert job["spec"]["dataset"] == str(SAMPLE_SFT)
        assert job["spec"]["deepspeed"] == {"zero_stage": 2, "offload": False}
        assert job["spec"]["hyperparameters"]["max_steps"] == 8
        assert job["progress"] is None and job["failure_reason"] is None
        assert job["output_dir"] == str(settings.home / "jobs" / "first-job" / "output")
        for field in ("created_at", "updated_at", "started_at", "finished_at"):
            assert field in job

    def test_generates_a_valid_name_when_absent(self, client: TestClient) -> None:
        names = {client.post("/api/v1/jobs", json=job_body()).json()["name"] for _ in range(3)}
        assert len(names) == 3
        assert all(JOB_NAME_RE.match(name) for name in names)

    def test_stores_record_events_task_and_config(
        self, client: TestClient, settings: Settings
    ) -> None:
        client.post("/api/v1/jobs", json=job_body(name="stored", metadata={"team": "nlp"}))
        job_dir = settings.home / "jobs" / "stored"
        record = json.loads((job_dir / "job.json").read_text())
        assert record["owner"] == "tester"
        config = json.loads((job_dir / "workdir" / "job_config.json").read_text())
        assert config["model"] == "tiny-random-llama"
        assert config["metadata"] == {"team": "nlp"}
        assert config["output_dir"] == str(job_dir / "output")
        task = yaml.safe_load((job_dir / "task.yaml").read_text())
        assert task["name"] == "stored"
        assert task["workdir"] == str(job_dir / "workdir")

    def test_duplicate_name_is_409(self, client: TestClient) -> None:
        assert client.post("/api/v1/jobs", json=job_body(name="twice")).status_code == 202
        response = client.post("/api/v1/jobs", json=job_body(name="twice"))
        assert response.status_code == 409
        assert error_code(response) == "job_exists"

    def test_uses_the_servers_default_executor(self, client: TestClient) -> None:
        job = client.post("/api/v1/jobs", json=job_body()).json()
        assert job["spec"]["executor"] == "local"

    def test_a_job_without_executor_takes_the_server_setting(
        self, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(executor="skypilot")
        app = create_app(settings, skypilot_sdk=RecordingSkyPilot())
        with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
            response = client.post("/api/v1/jobs", json=job_body())
            assert response.json()["spec"]["executor"] == "skypilot"
            explicit = client.post("/api/v1/jobs", json=job_body(executor="local"))
            assert explicit.json()["spec"]["executor"] == "local"


class TestCreateJobRejectsBadInput:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"unknown_field": 1},
            {"name": "Upper-Case"},
            {"name": "9starts-with-digit"},
            {"name": "a" * 40},
            {"name": "has_underscore"},
            {"model": ""},
            {"model": 42},
            {"hyperparameters": {"learning_rate": "fast"}},
            {"hyperparameters": {"batch_size": 0}},
            {"hyperparameters": {"epochs": -1}},
            {"hyperparameters": {"surprise": 1}},
            {"deepspeed": {"zero_stage": 4}},
            {"deepspeed": {"zero_stage": 1, "offload": True}},
            {"resources": {"accelerators": "A100:eight"}},
            {"resources": {"num_nodes": 0}},
            {"executor": "kubernetes"},
            {"metadata": {"bad key": "v"}},
            {"metadata": {"k": 3}},
        ],
    )
    def test_validation_errors_are_422(
        self, client: TestClient, settings: Settings, overrides: dict[str, object]
    ) -> None:
        response = client.post("/api/v1/jobs", json=job_body(**overrides))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "validation_error"
        assert detail["msg"] and isinstance(detail["errors"], list)
        assert_nothing_written(settings)

    def test_malformed_json_is_422(self, client: TestClient) -> None:
        response = client.post(
            "/api/v1/jobs", content=b'{"model": ', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert error_code(response) == "validation_error"

    def test_missing_dataset_is_422(
        self, client: TestClient, settings: Settings, tmp_path: Path
    ) -> None:
        # Inside the data dirs (tmp_path); outside them it would be 403 whether it exists or not.
        missing = tmp_path / "nonexistent" / "x.jsonl"
        response = client.post("/api/v1/jobs", json=job_body(dataset=str(missing)))
        assert response.status_code == 422
        assert error_code(response) == "invalid_dataset"
        assert_nothing_written(settings)

    def test_dataset_that_is_not_jsonl_is_422(self, client: TestClient, tmp_path: Path) -> None:
        text = tmp_path / "notes.txt"
        text.write_text("hello\n")
        response = client.post("/api/v1/jobs", json=job_body(dataset=str(text)))
        assert response.status_code == 422
        assert error_code(response) == "invalid_dataset"

    def test_dataset_directory_is_422(self, client: TestClient, tmp_path: Path) -> None:
        response = client.post("/api/v1/jobs", json=job_body(dataset=str(tmp_path)))
        assert error_code(response) == "invalid_dataset"

    def test_bad_rows_are_reported_by_line(self, client: TestClient, tmp_path: Path) -> None:
        data = write_jsonl(
            tmp_path / "bad.jsonl",
            [{"text": "fine"}, "{not json", {"text": "fine again"}, {"text": 7}],
        )
        response = client.post("/api/v1/jobs", json=job_body(dataset=str(data)))
        assert response.status_code == 422
        msg = response.json()["detail"]["msg"]
        assert error_code(response) == "invalid_dataset"
        assert "line 2" in msg and "line 4" in msg

    def test_bucket_uri_needs_the_skypilot_executor(self, client: TestClient) -> None:
        response = client.post("/api/v1/jobs", json=job_body(dataset="s3://bucket/train.jsonl"))
        assert response.status_code == 422
        assert error_code(response) == "invalid_dataset"

    def test_unknown_model_is_422(self, client: TestClient) -> None:
        response = client.post("/api/v1/jobs", json=job_body(model="not a model!"))
        assert response.status_code == 422
        assert error_code(response) == "invalid_model"

    def test_model_directory_without_config_is_422(
        self, client: TestClient, settings: Settings
    ) -> None:
        directory = settings.model_dirs[0] / "half-copied"
        directory.mkdir(parents=True)
        response = client.post("/api/v1/jobs", json=job_body(model=str(directory)))
        assert response.status_code == 422
        assert error_code(response) == "invalid_model"

    def test_local_executor_runs_one_node(self, client: TestClient) -> None:
        response = client.post("/api/v1/jobs", json=job_body(resources={"num_nodes": 2}))
        assert response.status_code == 422
        assert error_code(response) == "invalid_spec"


class TestGetJob:
    def test_returns_the_job(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="get-me"))
        job = client.get("/api/v1/jobs/get-me").json()
        assert job["name"] == "get-me" and job["status"] == "PENDING"

    @pytest.mark.parametrize("name", ["missing", "a..b", "UPPER", "x" * 60, "%2e%2e"])
    def test_unknown_or_invalid_name_is_404(self, client: TestClient, name: str) -> None:
        response = client.get(f"/api/v1/jobs/{name}")
        assert response.status_code == 404
        assert error_code(response) == "job_not_found"

    def test_encoded_traversal_never_leaves_the_store(self, client: TestClient) -> None:
        response = client.get("/api/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd")
        assert response.status_code == 404
        assert "root:" not in response.text

    def test_unknown_route_uses_the_error_shape(self, client: TestClient) -> None:
        response = client.get("/api/v1/nothing-here")
        assert response.status_code == 404
        assert error_code(response) == "not_found"


class TestListJobs:
    def test_pages_newest_first_without_gaps_or_repeats(self, client: TestClient) -> None:
        created = [
            client.post("/api/v1/jobs", json=job_body(name=f"page-{i}")).json()["name"]
            for i in range(7)
        ]
        seen: list[str] = []
        cursor = None
        pages = []
        while True:
            params: dict[str, object] = {"limit": 3}
            if cursor:
                params["after"] = cursor
            page = client.get("/api/v1/jobs", params=params).json()
            pages.append(len(page["data"]))
            seen += [job["name"] for job in page["data"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert pages == [3, 3, 1]
        assert seen == list(reversed(created))

    def test_default_limit_is_20(self, client: TestClient) -> None:
        for i in range(21):
            client.post("/api/v1/jobs", json=job_body(name=f"many-{i}"))
        page = client.get("/api/v1/jobs").json()
        assert len(page["data"]) == 20 and page["has_more"] is True

    def test_filters_by_status(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="stays"))
        client.post("/api/v1/jobs", json=job_body(name="goes"))
        client.post("/api/v1/jobs/goes/cancel")
        cancelled = client.get("/api/v1/jobs", params={"status": "CANCELLED"}).json()["data"]
        assert [job["name"] for job in cancelled] == ["goes"]
        pending = client.get("/api/v1/jobs", params={"status": "PENDING"}).json()["data"]
        assert [job["name"] for job in pending] == ["stays"]

    @pytest.mark.parametrize(
        ("params", "code"),
        [
            ({"limit": 0}, "validation_error"),
            ({"limit": 101}, "validation_error"),
            ({"status": "DONE"}, "validation_error"),
            ({"after": "not-a-cursor"}, "invalid_cursor"),
        ],
    )
    def test_bad_parameters_are_422(
        self, client: TestClient, params: dict[str, object], code: str
    ) -> None:
        response = client.get("/api/v1/jobs", params=params)
        assert response.status_code == 422
        assert error_code(response) == code


class TestCancelJob:
    def test_pending_job_is_cancelled_at_once(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="queued"))
        response = client.post("/api/v1/jobs/queued/cancel")
        assert response.status_code == 202
        job = response.json()
        assert job["status"] == "CANCELLED" and job["finished_at"] is not None

    def test_cancelling_a_finished_job_is_409(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="done"))
        client.post("/api/v1/jobs/done/cancel")
        response = client.post("/api/v1/jobs/done/cancel")
        assert response.status_code == 409
        assert error_code(response) == "job_finished"

    def test_unknown_job_is_404(self, client: TestClient) -> None:
        assert error_code(client.post("/api/v1/jobs/nope/cancel")) == "job_not_found"


class TestDeleteJob:
    def test_active_job_is_409(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="busy"))
        response = client.delete("/api/v1/jobs/busy")
        assert response.status_code == 409
        assert error_code(response) == "job_active"

    def test_finished_job_is_removed_with_its_files(
        self, client: TestClient, settings: Settings
    ) -> None:
        client.post("/api/v1/jobs", json=job_body(name="old"))
        client.post("/api/v1/jobs/old/cancel")
        response = client.delete("/api/v1/jobs/old")
        assert response.status_code == 204 and response.content == b""
        assert not (settings.home / "jobs" / "old").exists()
        assert list((settings.home / "trash").iterdir()) == []
        assert client.get("/api/v1/jobs/old").status_code == 404
        assert client.delete("/api/v1/jobs/old").status_code == 404
        # The name is free again.
        assert client.post("/api/v1/jobs", json=job_body(name="old")).status_code == 202


class TestJobResources:
    def test_events_record_each_change_and_its_actor(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="watched"))
        client.post(
            "/api/v1/jobs/watched/cancel", headers={"X-API-Key": "test-key-other-9876543210"}
        )
        events = client.get("/api/v1/jobs/watched/events").json()["data"]
        assert [(e["type"], e["status"], e["actor"]) for e in events] == [
            ("created", "PENDING", "tester"),
            ("cancel_requested", "PENDING", "other"),
            ("status_changed", "CANCELLED", "other"),
        ]
        assert all(e["time"] and e["message"] for e in events)

    def test_logs_and_metrics_are_empty_before_the_run(self, client: TestClient) -> None:
        client.post("/api/v1/jobs", json=job_body(name="quiet"))
        logs = client.get("/api/v1/jobs/quiet/logs")
        assert logs.status_code == 200 and logs.text == ""
        assert logs.headers["content-type"].startswith("text/plain")
        assert client.get("/api/v1/jobs/quiet/metrics").json() == {"data": []}

    @pytest.mark.parametrize("suffix", ["logs", "events", "metrics", "task"])
    def test_unknown_job_is_404(self, client: TestClient, suffix: str) -> None:
        response = client.get(f"/api/v1/jobs/ghost/{suffix}")
        assert response.status_code == 404
        assert error_code(response) == "job_not_found"

    def test_task_is_the_rendered_skypilot_yaml(self, client: TestClient) -> None:
        body = job_body(
            name="rendered",
            resources={
                "accelerators": "A100:8",
                "cloud": "aws",
                "region": "us-east-1",
                "use_spot": True,
            },
        )
        client.post("/api/v1/jobs", json=body)
        response = client.get("/api/v1/jobs/rendered/task")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/yaml")
        task = yaml.safe_load(response.text)
        template = load_template()
        assert task["name"] == "rendered"
        assert task["num_nodes"] == 1
        assert task["resources"] == {
            **template["resources"],
            "accelerators": "A100:8",
            "cloud": "aws",
            "region": "us-east-1",
            "use_spot": True,
        }
        # The scripts are the template's, byte for byte: no value was pasted into them.
        assert task["run"] == template["run"] and task["setup"] == template["setup"]
        assert set(task["envs"]) == set(template["envs"])
