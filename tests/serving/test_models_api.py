"""`/api/v1/models`: what SUCCEEDED jobs registered, the base models, ownership, deletion,
and which models a job may train from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.builders import API_KEY, job_body
from tests.serving.conftest import (
    ALICE_KEY,
    BASE_MODELS,
    BOB_KEY,
    SAMPLE_CHAT,
    TRAINING,
    Served,
    wait_job,
)

pytestmark = pytest.mark.timeout(300)


def error(response: Any) -> dict[str, Any]:
    return response.json()["detail"]  # type: ignore[no-any-return]


class TestRegistration:
    def test_succeeded_jobs_carry_their_model_id(self, served: Served) -> None:
        assert served.full["fine_tuned_model"] == "ft:tiny-random-llama:full-a"
        assert served.lora["fine_tuned_model"] == "ft:tiny-random-llama:lora-a"
        with served.api(ALICE_KEY) as api:
            events = api.get("/api/v1/jobs/full-a/events").json()["data"]
        registered = [e for e in events if e["type"] == "model_registered"]
        assert [e["message"] for e in registered] == [
            "model registered as ft:tiny-random-llama:full-a"
        ]

    def test_a_model_shows_lineage_metrics_and_checkpoints(self, served: Served) -> None:
        with served.api(ALICE_KEY) as api:
            full = api.get("/api/v1/models/ft:tiny-random-llama:full-a").json()
            lora = api.get("/api/v1/models/ft:tiny-random-llama:lora-a").json()
            metrics = api.get("/api/v1/jobs/full-a/metrics").json()["data"]

        assert full["job"] == "full-a" and full["owner"] == "alice"
        assert full["method"] == "full" and lora["method"] == "lora"
        assert full["base_model"] == "tiny-random-llama"
        assert full["path"] == served.full["output_dir"]
        weights = Path(full["path"]) / "model.safetensors"
        assert full["size_bytes"] > weights.stat().st_size > 0
        # An adapter is a fraction of the model it adapts.
        assert 0 < lora["size_bytes"] < full["size_bytes"]
        assert full["metrics"]["train_loss"] == [m for m in metrics if m["loss"]][-1]["loss"]
        assert full["lineage"]["dataset"] == str(SAMPLE_CHAT)
        assert full["lineage"]["hyperparameters"]["max_steps"] == TRAINING["max_steps"]
        assert lora["lineage"]["lora"]["r"] == 8
        assert full["checkpoints"] == [
            "ft:tiny-random-llama:full-a:ckpt-10",
            "ft:tiny-random-llama:full-a:ckpt-20",
            "ft:tiny-random-llama:full-a:ckpt-30",
        ]

    def test_a_checkpoint_id_is_a_model_of_its_own(self, served: Served) -> None:
        with served.api(ALICE_KEY) as api:
            checkpoint = api.get("/api/v1/models/ft:tiny-random-llama:full-a:ckpt-10").json()
            missing = api.get("/api/v1/models/ft:tiny-random-llama:full-a:ckpt-11")

        assert checkpoint["id"] == "ft:tiny-random-llama:full-a:ckpt-10"
        assert checkpoint["path"].endswith("/output/checkpoint-10")
        assert missing.status_code == 404 and error(missing)["code"] == "model_not_found"

    def test_token_lengths_were_measured_by_the_worker(self, served: Served) -> None:
        stats = served.full["dataset_stats"]
        assert stats["token_stats"] == "measured"
        assert 0 < stats["token_min"] <= stats["token_mean"] <= stats["token_max"]


class TestListing:
    def test_newest_first_base_models_last_pages_cover_everything(self, served: Served) -> None:
        seen: list[str] = []
        after = None
        with served.api(ALICE_KEY) as api:
            everything = [m["id"] for m in api.get("/api/v1/models?limit=100").json()["data"]]
            while True:
                page = api.get(
                    "/api/v1/models", params={"limit": 1, "after": after} if after else {"limit": 1}
                ).json()
                seen.extend(m["id"] for m in page["data"])
                if not page["has_more"]:
                    assert page["next_cursor"] is None
                    break
                after = page["next_cursor"]

        assert seen == everything
        assert len(set(seen)) == len(seen)
        assert {"ft:tiny-random-llama:full-a", "ft:tiny-random-llama:lora-a"} <= set(seen[:-3])
        assert set(seen[-3:]) == BASE_MODELS

    def test_user_keys_see_their_own_models_and_the_base_models(self, served: Served) -> None:
        with served.api(BOB_KEY) as api:
            bob = {m["id"] for m in api.get("/api/v1/models").json()["data"]}
        with served.api(API_KEY) as api:
            admin = {m["id"] for m in api.get("/api/v1/models?limit=100").json()["data"]}

        assert bob == BASE_MODELS
        assert {"ft:tiny-random-llama:full-a", "ft:tiny-random-llama:lora-a"} <= admin

    def test_a_cursor_this_server_did_not_make_is_422(self, served: Served) -> None:
        with served.api(ALICE_KEY) as api:
            response = api.get("/api/v1/models", params={"after": "bm90IGEgY3Vyc29y!"})
        assert response.status_code == 422 and error(response)["code"] == "invalid_cursor"

    def test_a_base_model_directory_is_listed_with_no_job(self, served: Served) -> None:
        with served.api(BOB_KEY) as api:
            model = api.get("/api/v1/models/house-llama").json()
        assert model["job"] is None and model["owner"] is None and model["method"] is None
        assert model["path"] == str(served.model_dir)
        assert model["size_bytes"] > 0


class TestTrainingFrom:
    """A job's model: confined to the model dirs, and to the fine-tuned models one may see."""

    def post(self, served: Served, key: str, **body: Any) -> Any:
        with served.api(key) as api:
            return api.post("/api/v1/jobs", json=job_body(**body))

    def test_another_users_output_directory_is_path_not_allowed(self, served: Served) -> None:
        response = self.post(served, BOB_KEY, model=served.full["output_dir"])
        assert response.status_code == 403 and error(response)["code"] == "path_not_allowed"

    def test_another_users_fine_tuned_model_is_refused(self, served: Served) -> None:
        response = self.post(served, BOB_KEY, model="ft:tiny-random-llama:full-a")
        assert response.status_code == 422 and error(response)["code"] == "invalid_model"
        assert "full-a" in error(response)["msg"]

    @pytest.mark.parametrize("path", ["/etc", "/no/such/directory", "/etc/../etc/passwd", "~"])
    def test_paths_outside_the_model_dirs_get_one_answer_whether_or_not_they_exist(
        self, served: Served, path: str
    ) -> None:
        response = self.post(served, BOB_KEY, model=path)
        assert response.status_code == 403
        assert error(response)["code"] == "path_not_allowed"
        # The answer names the path it was given, and nothing about what is there.
        assert error(response)["msg"] == (
            f"Model path {path!r} is outside the directories this server reads models from "
            "(AINFINITY_MODEL_DIRS)."
        )

    def test_a_model_dir_is_taken_by_name_or_by_path(self, served: Served) -> None:
        by_name = self.post(served, BOB_KEY, model="house-llama")
        by_path = self.post(served, BOB_KEY, model=str(served.model_dir))
        assert by_name.status_code == by_path.status_code == 202, (by_name.text, by_path.text)
        for response in (by_name, by_path):
            job = response.json()
            assert job["spec"]["model"] == str(served.model_dir)
            config = json.loads(
                (served.home / "jobs" / job["name"] / "workdir" / "job_config.json").read_text()
            )
            assert config["model"] == str(served.model_dir)
        with served.api(BOB_KEY) as api:
            for response in (by_name, by_path):
                assert api.post(f"/api/v1/jobs/{response.json()['name']}/cancel").status_code == 202

    def test_training_continues_from_fine_tuned_models(self, served: Served) -> None:
        # A full model goes on as a full one; a LoRA one goes on training its adapter.
        full_job = job_body(
            name="more-full", model="ft:tiny-random-llama:full-a", dataset=str(SAMPLE_CHAT)
        )
        lora_job = job_body(
            name="more-lora",
            model="ft:tiny-random-llama:lora-a",
            method="lora",
            dataset=str(SAMPLE_CHAT),
        )
        with served.api(ALICE_KEY) as api:
            for body in (full_job, lora_job):
                response = api.post("/api/v1/jobs", json=body)
                assert response.status_code == 202, response.text
            full, lora = wait_job(api, "more-full"), wait_job(api, "more-lora")
        assert full["status"] == lora["status"] == "SUCCEEDED", (full, lora)

        assert full["spec"]["model"] == "ft:tiny-random-llama:full-a"
        # The id keeps the first base model of the lineage.
        assert full["fine_tuned_model"] == "ft:tiny-random-llama:more-full"
        assert lora["fine_tuned_model"] == "ft:tiny-random-llama:more-lora"
        config = json.loads((served.home / "jobs/more-lora/workdir/job_config.json").read_text())
        assert config["model"] == "tiny-random-llama"
        assert config["adapter"] == served.lora["output_dir"]
        assert config["model_seed"] == served.lora["spec"]["hyperparameters"]["seed"]
        answer = served.sdk().chat.completions.create(
            model="ft:tiny-random-llama:more-lora",
            messages=[{"role": "user", "content": "What is 2 plus 2?"}],
            max_tokens=4,
        )
        assert answer.choices[0].finish_reason in ("stop", "length")


def test_deleting_a_model_keeps_its_job_and_files(served: Served) -> None:
    with served.api(ALICE_KEY) as api:
        body = job_body(
            name="short-lived",
            dataset=str(SAMPLE_CHAT),
            hyperparameters={**TRAINING, "max_steps": 4},
        )
        assert api.post("/api/v1/jobs", json=body).status_code == 202
        job = wait_job(api, "short-lived")
        model_id = job["fine_tuned_model"]
        sdk = served.sdk()
        sdk.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )

        def loaded() -> list[str]:
            workers = api.get("/api/v1/serving").json()["workers"]
            return [m["id"] for m in workers[0]["loaded_models"]]

        assert model_id in loaded()

        assert api.delete(f"/api/v1/models/{model_id}").status_code == 204

        assert api.get(f"/api/v1/models/{model_id}").status_code == 404
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "hi"}]
            )
        assert model_id not in loaded()
        after = api.get("/api/v1/jobs/short-lived").json()
        assert after["status"] == "SUCCEEDED" and after["fine_tuned_model"] is None
        assert Path(after["output_dir"], "model.safetensors").is_file()
        events = api.get("/api/v1/jobs/short-lived/events").json()["data"]
        assert events[-1]["type"] == "model_deleted" and events[-1]["actor"] == "alice"
        assert api.delete(f"/api/v1/models/{model_id}").status_code == 404
        # Base models are not deleted through the API.
        refused = api.delete("/api/v1/models/tiny-random-llama")
        assert refused.status_code == 409 and error(refused)["code"] == "model_not_deletable"


def test_deleting_a_job_takes_its_model(served: Served) -> None:
    with served.api(ALICE_KEY) as api:
        body = job_body(name="gone-soon", hyperparameters={**TRAINING, "max_steps": 2})
        assert api.post("/api/v1/jobs", json=body).status_code == 202
        model_id = wait_job(api, "gone-soon")["fine_tuned_model"]
        assert api.get(f"/api/v1/models/{model_id}").status_code == 200

        assert api.delete("/api/v1/jobs/gone-soon").status_code == 204

        assert api.get(f"/api/v1/models/{model_id}").status_code == 404
        ids = [m["id"] for m in api.get("/api/v1/models?limit=100").json()["data"]]
        assert model_id not in ids
