"""LoRA on chat data, packed, with gradient checkpointing: one real run of the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.model_loading import MERGED_DIR_NAME
from ainfinity.train.protocol import DATASET_PREFIX, DONE_PREFIX, ERROR_PREFIX

from .builders import (
    SAMPLES_DIR,
    FinetuneRun,
    run_trainer,
    single_process_command,
    write_job_config,
)

SEED = 42
EPOCHS = 3
TRAIN_ROWS = 64


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("lora")
    config = write_job_config(
        workdir,
        dataset=SAMPLES_DIR / "tiny_chat.jsonl",
        top_level={
            "validation_dataset": str(SAMPLES_DIR / "tiny_chat_val.jsonl"),
            "method": "lora",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None, "merge": True},
        },
        epochs=EPOCHS,
        learning_rate=0.02,
        seed=SEED,
        packing=True,
        gradient_checkpointing=True,
        save_steps=None,
    )
    return run_trainer(workdir, single_process_command(config))


def base_model() -> Any:
    from ainfinity.train.tiny_model import build_tiny_random_llama

    return build_tiny_random_llama(SEED)[0]


def logits(model: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 80, 81, 82, 83, 84, 85]])).logits


def test_trains_and_evaluates_once_at_the_end(lora_run: FinetuneRun) -> None:
    assert lora_run.returncode == 0, lora_run.stderr[-3000:]
    assert not lora_run.events(ERROR_PREFIX)
    [done] = lora_run.events(DONE_PREFIX)
    losses = list(lora_run.losses().values())
    # The starting model (its adapters are zero: the base alone), then the trained one.
    start_eval, final_eval = lora_run.eval_records()

    assert losses[-1] < losses[0], losses
    assert start_eval["step"] == 0 and final_eval["eval_loss"] < start_eval["eval_loss"]
    assert final_eval["step"] == max(lora_run.losses())
    assert math.isfinite(final_eval["eval_loss"])
    assert math.isfinite(done.payload["train_loss"])


def test_counts_the_examples_and_tokens_inside_the_packs(lora_run: FinetuneRun) -> None:
    from ainfinity.train.dataset import load_examples
    from ainfinity.train.tiny_model import build_byte_tokenizer

    [dataset] = lora_run.events(DATASET_PREFIX)
    first_epoch = [r for r in lora_run.train_records() if r["epoch"] <= 1 + 1e-9]
    examples = sum(r["samples_per_second"] * r["step_time_seconds"] for r in first_epoch)
    tokens = sum(r["tokens_per_second"] * r["step_time_seconds"] for r in first_epoch)
    rows = load_examples(
        SAMPLES_DIR / "tiny_chat.jsonl", build_byte_tokenizer(), max_seq_length=256
    )

    assert (dataset.payload["format"], dataset.payload["rows"]) == ("chat", TRAIN_ROWS)
    # Packing puts several rows in one sequence: fewer steps than unpacked batches of 4.
    assert len(first_epoch) < TRAIN_ROWS // 4
    assert examples == pytest.approx(TRAIN_ROWS)
    assert tokens == pytest.approx(sum(len(row["input_ids"]) for row in rows))


def test_saves_only_the_adapter_and_the_chat_template(lora_run: FinetuneRun) -> None:
    from transformers import AutoTokenizer

    output = lora_run.output_dir
    adapter_config = json.loads((output / "adapter_config.json").read_text())

    assert (output / "adapter_model.safetensors").is_file()
    assert not (output / "model.safetensors").exists()
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (8, 16)
    # "all-linear": every projection of every layer, not the (tied) output head.
    adapted = {name.rsplit(".", 1)[-1] for name in adapter_config["target_modules"]}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert AutoTokenizer.from_pretrained(output).chat_template


def test_merged_model_equals_base_plus_adapter_and_generates(lora_run: FinetuneRun) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = lora_run.output_dir / MERGED_DIR_NAME
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapted = PeftModel.from_pretrained(base_model(), str(lora_run.output_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)

    assert logits(merged) == pytest.approx(logits(adapted), abs=1e-4)
    assert not logits(merged).allclose(logits(base_model()), atol=1e-3)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 plus 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = merged.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_reports_a_target_module_the_model_lacks_as_a_model_load_error(tmp_path: Path) -> None:
    config = write_job_config(
        tmp_path,
        dataset=SAMPLES_DIR / "tiny_sft.jsonl",
        top_level={"method": "lora", "lora": {"target_modules": ["no_such_proj"]}},
    )

    run = run_trainer(tmp_path, single_process_command(config))

    assert run.returncode == 1
    [error] = run.events(ERROR_PREFIX)
    assert error.payload["code"] == "model_load_error"
    assert "no_such_proj" in error.payload["msg"]
