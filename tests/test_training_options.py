"""The training options of `POST /jobs`: dataset checks and statistics, LoRA, job config."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from ainfinity.jobs.progress import progress_from
from ainfinity.schema.activity import Metric
from tests.builders import API_KEY, ROOT, SAMPLE_TEXT, job_body, write_jsonl

SAMPLE_CHAT = ROOT / "samples" / "tiny_chat.jsonl"
SAMPLE_CHAT_VAL = ROOT / "samples" / "tiny_chat_val.jsonl"


def error(response: object) -> dict[str, str]:
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert set(detail) >= {"code", "msg"}
    return detail


class TestDatasetChecks:
    def test_bad_chat_rows_are_422_with_line_and_reason(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        good = {
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        }
        data = write_jsonl(
            tmp_path / "chat.jsonl",
            [
                good,
                {"messages": [{"role": "wizard", "content": "x"}, good["messages"][1]]},
                good,
                {"messages": [{"role": "user", "content": ""}, good["messages"][1]]},
                "{not json",
            ],
        )
        response = client.post("/api/v1/jobs", json=job_body(dataset=str(data)))

        assert response.status_code == 422
        detail = error(response)
        assert detail["code"] == "invalid_dataset"
        assert "line 2:" in detail["msg"] and "wizard" in detail["msg"]
        assert "line 4:" in detail["msg"] and "empty" in detail["msg"]
        assert "line 5:" in detail["msg"]
        assert "line 1:" not in detail["msg"] and "line 3:" not in detail["msg"]
        assert client.get("/api/v1/jobs").json()["data"] == []

    def test_bad_validation_dataset_is_422_naming_it(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        bad = write_jsonl(tmp_path / "val.jsonl", [{"text": 3}])
        response = client.post(
            "/api/v1/jobs", json=job_body(dataset=str(SAMPLE_TEXT), validation_dataset=str(bad))
        )

        assert response.status_code == 422
        assert error(response)["code"] == "invalid_dataset"
        assert error(response)["msg"].startswith("Validation dataset")
        assert "line 1:" in error(response)["msg"]

    def test_validation_dataset_of_another_format_is_422(self, client: TestClient) -> None:
        response = client.post(
            "/api/v1/jobs",
            json=job_body(dataset=str(SAMPLE_CHAT), validation_dataset=str(SAMPLE_TEXT)),
        )

        assert response.status_code == 422
        assert "one format" in error(response)["msg"]


@pytest.fixture(scope="class")
def stats_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app that measures token lengths (in its inference worker), for the whole class."""
    tmp = tmp_path_factory.mktemp("stats")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp / "home",
        data_dirs=[tmp, ROOT / "samples"],
        api_keys=SecretStr(f"tester:{API_KEY}"),
        local_max_jobs=0,
        token_stats=True,
    )
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.tmp = tmp  # type: ignore[attr-defined]
        yield client


def measured(client: TestClient, response: Any) -> dict[str, Any]:
    """The job once its token lengths are measured (they are `pending` in the 202)."""
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["dataset_stats"]["token_stats"] == "pending"
    assert job["dataset_stats"]["token_max"] is None
    deadline = time.monotonic() + 60
    while job["dataset_stats"]["token_stats"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/api/v1/jobs/{job['name']}").json()
    return job


class TestDatasetStats:
    def test_text_rows_are_measured_in_tokens_before_truncation(
        self, stats_client: TestClient
    ) -> None:
        client, tmp_path = stats_client, stats_client.tmp  # type: ignore[attr-defined]
        # The tiny model's tokenizer is one token per UTF-8 byte, plus bos and eos: the
        # expected lengths follow from the bytes alone.
        texts = ["ab", "héllo wörld", "x" * 40, "y" * 100]
        data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
        lengths = sorted(len(t.encode()) + 2 for t in texts)
        body = job_body(name="stats", dataset=str(data))
        body["hyperparameters"]["max_seq_length"] = 64

        job = measured(client, client.post("/api/v1/jobs", json=body))

        stats = job["dataset_stats"]
        assert stats["token_stats"] == "measured"
        assert stats["rows"] == 4 and stats["format"] == "text"
        assert stats["max_seq_length"] == 64
        assert stats["token_min"] == lengths[0] and stats["token_max"] == lengths[-1]
        assert stats["token_mean"] == round(sum(lengths) / 4, 2)
        assert stats["truncated_rows"] == sum(length > 64 for length in lengths)
        assert job["validation_dataset_stats"] is None
        assert client.get("/api/v1/jobs/stats").json()["dataset_stats"] == stats

    def test_chat_and_validation_sets_both_get_stats(self, stats_client: TestClient) -> None:
        body = job_body(dataset=str(SAMPLE_CHAT), validation_dataset=str(SAMPLE_CHAT_VAL))

        job = measured(stats_client, stats_client.post("/api/v1/jobs", json=body))

        assert job["dataset_stats"]["rows"] == 64
        assert job["dataset_stats"]["format"] == "chat"
        assert job["validation_dataset_stats"]["rows"] == 16
        for stats in (job["dataset_stats"], job["validation_dataset_stats"]):
            assert 0 < stats["token_min"] <= stats["token_mean"] <= stats["token_max"]
            assert stats["token_min"] <= stats["token_p95"] <= stats["token_max"]

    def test_a_hub_model_not_cached_here_gets_rows_but_no_token_figures(
        self, stats_client: TestClient
    ) -> None:
        response = stats_client.post("/api/v1/jobs", json=job_body(model="no-such-org/no-such"))
        job = measured(stats_client, response)

        stats = job["dataset_stats"]
        assert stats["rows"] == 64 and stats["format"] == "prompt_completion"
        assert stats["token_stats"] == "unavailable"
        assert stats["token_max"] is None and stats["truncated_rows"] is None

    def test_without_measuring_the_figures_are_unavailable_at_once(
        self, client: TestClient
    ) -> None:
        job = client.post("/api/v1/jobs", json=job_body()).json()

        assert job["dataset_stats"]["token_stats"] == "unavailable"
        assert job["dataset_stats"]["rows"] == 64


class TestMethodOptions:
    def test_lora_options_reach_the_job_config(
        self, client: TestClient, settings: Settings
    ) -> None:
        body = job_body(
            name="adapter",
            method="lora",
            lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"], "merge": True},
        )
        body["hyperparameters"].update(packing=True, gradient_checkpointing=True, save_steps=4)

        assert client.post("/api/v1/jobs", json=body).status_code == 202

        config_path = settings.home / "jobs" / "adapter" / "workdir" / "job_config.json"
        config = json.loads(config_path.read_text())
        assert config["method"] == "lora"
        assert config["lora"] == {
            "r": 8,
            "alpha": 16,
            "dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"],
            "merge": True,
        }
        assert config["hyperparameters"]["packing"] is True
        assert config["hyperparameters"]["save_steps"] == 4
        from ainfinity.train.job_config import load_job_config

        parsed = load_job_config(config_path)
        assert parsed.method == "lora" and parsed.lora.r == 8

    def test_lora_options_without_the_lora_method_are_422(self, client: TestClient) -> None:
        response = client.post("/api/v1/jobs", json=job_body(lora={"r": 8}))

        assert response.status_code == 422
        assert "method 'lora'" in error(response)["msg"]

    def test_unknown_attention_is_422(self, client: TestClient) -> None:
        body = job_body()
        body["hyperparameters"]["attn_implementation"] = "magic"

        assert client.post("/api/v1/jobs", json=body).status_code == 422

    def test_checkpoints_of_a_job_that_has_not_run_are_empty(self, client: TestClient) -> None:
        assert client.post("/api/v1/jobs", json=job_body(name="idle")).status_code == 202

        assert client.get("/api/v1/jobs/idle/checkpoints").json() == {"data": []}
        assert client.get("/api/v1/jobs/nope/checkpoints").status_code == 404

    def test_a_half_written_checkpoint_is_listed_as_incomplete(self, client: TestClient) -> None:
        job = client.post("/api/v1/jobs", json=job_body(name="preempted")).json()
        # What a preemption in the middle of a save leaves: weights, but no completion marker.
        half = Path(job["output_dir"]) / "checkpoint-40"
        half.mkdir(parents=True)
        (half / "model.safetensors").write_bytes(b"\0" * 16)

        [checkpoint] = client.get("/api/v1/jobs/preempted/checkpoints").json()["data"]

        assert (checkpoint["name"], checkpoint["step"]) == ("checkpoint-40", 40)
        assert checkpoint["complete"] is False and checkpoint["loss"] is None
        assert "path" not in checkpoint


def metric(step: int, **fields: float) -> Metric:
    return Metric.model_validate({"step": step, "time": "2026-11-23T00:00:00Z", **fields})


class TestProgress:
    def test_percent_and_eta_come_from_the_measured_step_time(self) -> None:
        train = metric(30, total_steps=120, loss=1.5, step_time_seconds=0.5, tokens_per_second=9.0)

        progress = progress_from(train, metric(25, total_steps=120, eval_loss=1.7), previous=None)

        assert progress is not None
        assert progress.percent == 25.0
        assert progress.eta_seconds == 45.0
        assert (progress.loss, progress.eval_loss, progress.tokens_per_second) == (1.5, 1.7, 9.0)

    def test_a_finished_run_is_at_100_percent_with_no_time_left(self) -> None:
        progress = progress_from(
            metric(120, total_steps=120, loss=1.0, step_time_seconds=0.5), None, previous=None
        )

        assert progress is not None and (progress.percent, progress.eta_seconds) == (100.0, 0.0)

    def test_eval_loss_is_kept_when_its_record_is_out_of_the_window(self) -> None:
        first = progress_from(
            metric(10, total_steps=20, loss=2.0), metric(10, eval_loss=2.5), previous=None
        )

        later = progress_from(metric(20, total_steps=20, loss=1.0), None, previous=first)

        assert later is not None and later.eval_loss == 2.5
        assert later.eta_seconds is None  # no step time measured: no guess
