"""Preference tuning (method `dpo`, TRL's DPOTrainer) through the API: a model first taught
two kinds of answer ("Yes!" and "no.") is taught which one is preferred, with OpenAI's
preference rows; its rewards say it learnt, and its served greedy answer follows the rule."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from tests.builders import API_KEY, wait_for, write_jsonl
from tests.conftest import MakeSettings

pytestmark = pytest.mark.timeout(600)

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
SUBJECTS = ["the sky", "a cat", "this plan", "the river", "my code", "the train", "a lemon"]
QUESTIONS = ["Is {} nice?", "Do you like {}?", "Should I check {}?", "Is {} ready?"]
HELD_OUT = ["Is the lake cold?", "Do you like tea?", "Is it late?"]


def question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(rng.choice(SUBJECTS))


def preference(prompt: str, *, legacy: bool = False) -> dict[str, Any]:
    chosen, rejected = ("preferred_completion", "non_preferred_completion") if legacy else (
        "preferred_output", "non_preferred_output",
    )  # fmt: skip
    return {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        chosen: [{"role": "assistant", "content": "Yes!"}],
        rejected: [{"role": "assistant", "content": "no."}],
    }


def test_dpo_teaches_which_answer_is_preferred(make_settings: MakeSettings, tmp_path: Path) -> None:
    rng = random.Random(5)
    sft = write_jsonl(
        tmp_path / "both.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": question(rng)},
                    {"role": "assistant", "content": rng.choice(["Yes!", "no."])},
                ]
            }
            for _ in range(96)
        ],
    )
    # Both names of OpenAI's preference fields, in one file.
    prefs = write_jsonl(
        tmp_path / "prefs.jsonl", [preference(question(rng), legacy=i % 4 == 0) for i in range(80)]
    )
    held = write_jsonl(tmp_path / "prefs_val.jsonl", [preference(q) for q in HELD_OUT])
    settings = make_settings(local_max_jobs=1)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        both = {
            "name": "both",
            "model": "tiny-random-llama",
            "dataset": str(sft),
            "hyperparameters": {"max_steps": 60, "batch_size": 8, "learning_rate": 5e-3,
                                "max_seq_length": 64, "logging_steps": 20},
        }  # fmt: skip
        assert client.post("/api/v1/jobs", json=both).status_code == 202
        assert wait_for(client, "both", TERMINAL, timeout=300)["status"] == "SUCCEEDED"
        dpo = {
            "name": "prefer-yes",
            "model": "ft:tiny-random-llama:both",
            "dataset": str(prefs),
            "validation_dataset": str(held),
            "method": "dpo",
            "dpo": {"beta": 0.1},
            "hyperparameters": {"max_steps": 30, "batch_size": 8, "learning_rate": 2e-3,
                                "max_seq_length": 64, "logging_steps": 5, "save_steps": None},
        }  # fmt: skip
        assert client.post("/api/v1/jobs", json=dpo).status_code == 202
        job = wait_for(client, "prefer-yes", TERMINAL, timeout=300)
        assert job["status"] == "SUCCEEDED", client.get("/api/v1/jobs/prefer-yes/logs").text
        metrics = client.get("/api/v1/jobs/prefer-yes/metrics").json()["data"]

        def answer(model: str, prompt: str) -> str:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": 8,
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return str(response.json()["choices"][0]["message"]["content"])

        before = [answer("ft:tiny-random-llama:both", prompt) for prompt in HELD_OUT]
        after = [answer(job["fine_tuned_model"], prompt) for prompt in HELD_OUT]

    train = [m for m in metrics if m["loss"] is not None]
    assert all(m["rewards/accuracies"] is not None for m in train)
    assert train[-1]["rewards/accuracies"] >= 0.9
    # The preferred answer pulls away from the other: a rising margin.
    margins = [m["rewards/margins"] for m in train]
    assert margins[-1] > margins[0] > 0 or margins[-1] > 2 * max(margins[0], 0.01), margins
    assert train[-1]["rewards/chosen"] > train[-1]["rewards/rejected"]
    assert job["eval_loss_after"] < job["eval_loss_before"]
    assert job["spec"]["method"] == "dpo" and job["dataset_stats"]["format"] == "preference"
    # Served, it follows the rule on questions it never saw; the model it started from didn't.
    assert after == ["Yes!"] * len(HELD_OUT), (before, after)
    assert before != after


class TestPreferenceRows:
    def test_chat_rows_are_refused_for_dpo_and_preference_rows_for_the_rest(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        prefs = write_jsonl(tmp_path / "p.jsonl", [preference("Is it?")])
        chat = write_jsonl(
            tmp_path / "c.jsonl",
            [
                {
                    "messages": [
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            ],
        )
        wrong = [
            client.post("/api/v1/jobs", json={"model": "tiny-random-llama", "dataset": str(chat),
                                              "method": "dpo"}),
            client.post("/api/v1/jobs", json={"model": "tiny-random-llama", "dataset": str(prefs)}),
        ]  # fmt: skip
        for response in wrong:
            assert response.status_code == 422, response.text
            assert response.json()["detail"]["code"] == "invalid_dataset"
        ok = client.post(
            "/api/v1/jobs",
            json={"model": "tiny-random-llama", "dataset": str(prefs), "method": "dpo",
                  "lora": {"r": 4}},
        )  # fmt: skip
        assert ok.status_code == 202, ok.text
        assert ok.json()["lora_target_modules"]  # LoRA-DPO adapts the projections

    @pytest.mark.parametrize(
        ("row", "reason"),
        [
            ({"input": {}, "preferred_output": [], "non_preferred_output": []}, "'messages'"),
            ({**preference("q"), "preferred_output": "Yes!"}, "array of one assistant message"),
            (
                {**preference("q"), "non_preferred_output": [{"role": "user", "content": "n"}]},
                "role must be assistant",
            ),
            ({"input": {"messages": [{"role": "user", "content": "q"}]}}, "preferred_output"),
        ],
    )
    def test_bad_preference_rows_are_422_with_their_line(
        self, client: TestClient, tmp_path: Path, row: dict[str, Any], reason: str
    ) -> None:
        path = write_jsonl(tmp_path / "bad.jsonl", [preference("fine"), row])
        body = {"model": "tiny-random-llama", "dataset": str(path), "method": "dpo"}
        response = client.post("/api/v1/jobs", json=body)
        assert response.status_code == 422
        assert "line 2:" in response.json()["detail"]["msg"]
        assert reason in response.json()["detail"]["msg"]

    def test_dpo_options_need_the_dpo_method(self, client: TestClient) -> None:
        body = {"model": "tiny-random-llama", "dataset": "samples/tiny_chat.jsonl",
                "dpo": {"beta": 0.2}}  # fmt: skip
        response = client.post("/api/v1/jobs", json=body)
        assert response.status_code == 422
        assert "dpo options need method 'dpo'" in json.dumps(response.json())
