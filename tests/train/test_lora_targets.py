"""`target_modules: auto`: the attention and MLP projections of Llama-, Mistral-, Qwen- and
Gemma-family models, from their configs (small random models built from each config, no
weights downloaded), and what a LoRA job records before it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ainfinity.core.config import Settings
from ainfinity.train.lora_targets import ALL_LINEAR, AUTO, model_type_of, resolve_targets
from tests.builders import job_body

SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
}
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def family_config(name: str) -> Any:
    from transformers import GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

    classes = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}
    if name == "gemma":
        return GemmaConfig(**SMALL, head_dim=8)
    return classes[name](**SMALL)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma"])
def test_auto_adapts_every_attention_and_mlp_projection_of_the_family(
    family: str, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = family_config(family)
    config.save_pretrained(tmp_path)
    assert model_type_of(tmp_path) == family  # read as the API reads it: JSON only

    targets = resolve_targets(AUTO, model_type_of(tmp_path))

    assert isinstance(targets, list) and set(targets) == PROJECTIONS
    model = AutoModelForCausalLM.from_config(config)
    linear = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }
    # Every linear layer but the head is one of them, and each of them exists.
    assert linear == PROJECTIONS
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    lora_layers = {
        name.split(".")[-1]
        for name, _ in adapted.named_modules()
        if name.endswith(tuple(PROJECTIONS))
    }
    assert lora_layers == PROJECTIONS


def test_other_families_fall_back_to_every_linear_layer() -> None:
    assert resolve_targets(AUTO, "gpt2") == ALL_LINEAR
    assert resolve_targets(AUTO, None) == ALL_LINEAR
    assert resolve_targets(None, "llama") == ALL_LINEAR  # jobs made before `auto`
    assert resolve_targets(["q_proj"], "llama") == ["q_proj"]


class TestRecordedOnTheJob:
    def test_the_built_in_records_its_projections(self, client: TestClient) -> None:
        job = client.post("/api/v1/jobs", json=job_body(method="lora")).json()
        assert set(job["lora_target_modules"]) == PROJECTIONS
        assert job["spec"]["lora"] is None  # the defaults: `auto`

    def test_a_model_directory_is_read_from_its_config(
        self, client: TestClient, settings: Settings
    ) -> None:
        directory = settings.model_dirs[0] / "qwen-ish"
        family_config("qwen2").save_pretrained(directory)
        body = job_body(name="qwen", model="qwen-ish", method="lora")

        job = client.post("/api/v1/jobs", json=body).json()

        assert set(job["lora_target_modules"]) == PROJECTIONS
        config = json.loads(
            (settings.home / "jobs" / "qwen" / "workdir" / "job_config.json").read_text()
        )
        assert set(config["lora"]["target_modules"]) == PROJECTIONS

    def test_a_list_asked_for_is_kept_and_full_jobs_record_none(self, client: TestClient) -> None:
        asked = client.post(
            "/api/v1/jobs", json=job_body(method="lora", lora={"target_modules": ["q_proj"]})
        ).json()
        full = client.post("/api/v1/jobs", json=job_body()).json()
        assert asked["lora_target_modules"] == ["q_proj"]
        assert full["lora_target_modules"] is None

    def test_an_uncached_hub_model_is_decided_where_it_loads(self, client: TestClient) -> None:
        job = client.post("/api/v1/jobs", json=job_body(model="no-org/no-model", method="lora"))
        assert job.json()["lora_target_modules"] is None
