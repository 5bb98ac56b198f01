"""A real instruct model, fine-tuned on a laptop: LoRA on the built-in smollm2-135m-instruct
with the shipped `json_answers` dataset, through the API, on CPU; the model it makes answers
a question it never saw in the taught JSON shape, and the base model does not.

One launch, 20 steps of 8 short rows: about two minutes on two cores (the model is unpacked
once per test session by the `smollm2_dir` fixture).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.builders import ROOT
from tests.conftest import share_model_cache
from tests.serving.conftest import ALICE_KEY, sdk_client, serving_server

pytestmark = pytest.mark.timeout(900)

HELD_OUT = "What is the largest planet in the solar system?"


def test_lora_on_smollm2_learns_the_json_shape_and_says_so_in_its_eval_loss(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    server = serving_server(
        tmp_path,
        AINFINITY_LOCAL_MAX_JOBS="1",
        AINFINITY_TOKEN_STATS="true",
        # The suite runs one thread per process; this one job may use both cores.
        OMP_NUM_THREADS="2",
    )
    share_model_cache(server.home, smollm2_dir)
    with server:
        with server.client(ALICE_KEY, timeout=120) as api:
            response = api.post(
                "/api/v1/jobs",
                json={
                    "name": "json-answers",
                    "model": "smollm2-135m-instruct",
                    "dataset": str(ROOT / "samples" / "json_answers.jsonl"),
                    "validation_dataset": str(ROOT / "samples" / "json_answers_val.jsonl"),
                    "method": "lora",
                    "hyperparameters": {
                        "max_steps": 20,
                        "batch_size": 8,
                        "learning_rate": 2e-3,
                        "max_seq_length": 80,
                        "logging_steps": 5,
                        "save_steps": None,
                    },
                },
            )
            assert response.status_code == 202, response.text
            assert set(response.json()["lora_target_modules"]) == {
                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
            }  # fmt: skip
            deadline = time.monotonic() + 800
            while (job := api.get("/api/v1/jobs/json-answers").json())["status"] not in (
                "SUCCEEDED", "FAILED", "CANCELLED",
            ):  # fmt: skip
                assert time.monotonic() < deadline, job
                time.sleep(2)
            logs = api.get("/api/v1/jobs/json-answers/logs").text
            assert job["status"] == "SUCCEEDED", logs[-3000:]
            model = api.get(f"/api/v1/models/{job['fine_tuned_model']}").json()

        # Did it get better? The validation loss before the first step, and at the end.
        before, after = job["eval_loss_before"], job["eval_loss_after"]
        assert after < before, (before, after)
        assert job["eval_gain"] == round((before - after) / before, 4) > 0
        assert model["metrics"]["eval_loss_before"] == before
        assert model["metrics"]["eval_loss"] == after
        assert job["dataset_stats"]["token_stats"] == "measured"
        assert "step 20/20 | loss" in logs

        # What it learnt, on a question that is in neither dataset.
        sdk = sdk_client(server, ALICE_KEY, timeout=300)
        answers = {
            model_id: sdk.chat.completions.create(
                model=model_id,
                messages=[{"role": "user", "content": HELD_OUT}],
                temperature=0,
                max_tokens=40,
            )
            .choices[0]
            .message.content
            for model_id in ("smollm2-135m-instruct", job["fine_tuned_model"])
        }
        tuned = json.loads(answers[job["fine_tuned_model"]] or "")
        assert set(tuned) == {"answer", "topic"}, answers
        assert not (answers["smollm2-135m-instruct"] or "").lstrip().startswith("{"), answers
        print(json.dumps(answers, indent=2))  # shown with -s: the two answers side by side
