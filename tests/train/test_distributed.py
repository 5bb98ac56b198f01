"""Two ranks under the `deepspeed` launcher, as the SkyPilot task starts them: ZeRO-2, and ZeRO-3
preempted after a checkpoint and relaunched.

On CPU DeepSpeed runs each rank as a process over gloo; ZeRO-2 and ZeRO-3 then train to the same
fp32 losses, so the ZeRO-2 run is the uninterrupted reference for the resumed ZeRO-3 one.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.checkpoints import list_checkpoints
from ainfinity.train.protocol import (
    DATASET_PREFIX,
    DONE_PREFIX,
    METRIC_PREFIX,
    RESUME_NOTICE,
    TrainerEvent,
)

from .builders import FinetuneRun, deepspeed_command, run_trainer, write_facts, write_job_config

RANKS = 2
BATCH_SIZE = 2  # per rank
ROWS = 64
MAX_STEPS = 24
SAVE_STEPS = 8
INTERRUPTED_AFTER = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def zero_job(workdir: Path, *, zero_stage: int) -> Path:
    dataset = write_facts(workdir / "train.jsonl", copies=ROWS // 8)
    validation = write_facts(workdir / "validation.jsonl", copies=1, seed=1)
    config = write_job_config(
        workdir,
        dataset=dataset,
        top_level={
            "validation_dataset": str(validation),
            "deepspeed": {"zero_stage": zero_stage, "offload": False},
        },
        max_steps=MAX_STEPS,
        learning_rate=0.01,
        batch_size=BATCH_SIZE,
        save_steps=SAVE_STEPS,
        save_total_limit=1,
    )
    return config


def launch(workdir: Path, config: Path, **kwargs: Any) -> FinetuneRun:
    command = deepspeed_command(config, ranks=RANKS, port=free_port())
    return run_trainer(workdir, command, timeout=400, **kwargs)


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("zero2")
    return launch(workdir, zero_job(workdir, zero_stage=2))


@pytest.fixture(scope="module")
def zero3_interrupted(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("zero3")

    def after_checkpoint(event: TrainerEvent) -> bool:
        return event.kind == METRIC_PREFIX and event.payload.get("step") == INTERRUPTED_AFTER + 1

    return launch(workdir, zero_job(workdir, zero_stage=3), kill_when=after_checkpoint)


@pytest.fixture(scope="module")
def zero3_resumed(zero3_interrupted: FinetuneRun) -> FinetuneRun:
    return launch(zero3_interrupted.workdir, zero3_interrupted.workdir / "job_config.json")


def final_weights(run: FinetuneRun) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run.output_dir / "model.safetensors")


class TestZero2:
    def test_rank_zero_alone_reports(self, zero2_run: FinetuneRun) -> None:
        assert zero2_run.returncode == 0, zero2_run.stderr[-3000:]
        assert len(zero2_run.events(DONE_PREFIX)) == 1
        assert len(zero2_run.events(DATASET_PREFIX)) == 1
        steps = [record["step"] for record in zero2_run.train_records()]
        assert steps == list(range(1, MAX_STEPS + 1))
        # The starting model too (step 0), evaluated once the DeepSpeed engine exists.
        assert [record["step"] for record in zero2_run.eval_records()] == [0, 8, 16, 24]

    def test_rates_sum_both_ranks(self, zero2_run: FinetuneRun, byte_tokenizer: Any) -> None:
        from ainfinity.train.dataset import load_examples

        train = zero2_run.train_records()
        examples = [r["samples_per_second"] * r["step_time_seconds"] for r in train]
        tokens = [r["tokens_per_second"] * r["step_time_seconds"] for r in train]
        rows = load_examples(zero2_run.workdir / "train.jsonl", byte_tokenizer, max_seq_length=256)
        steps_per_epoch = ROWS // (RANKS * BATCH_SIZE)

        assert examples == pytest.approx([RANKS * BATCH_SIZE] * MAX_STEPS)
        assert sum(tokens[:steps_per_epoch]) == pytest.approx(
            sum(len(row["input_ids"]) for row in rows)
        )

    def test_loss_falls(self, zero2_run: FinetuneRun) -> None:
        losses = list(zero2_run.losses().values())

        assert all(math.isfinite(loss) for loss in losses)
        assert losses[-1] < 0.5 * losses[0], losses

    def test_marks_the_last_checkpoint_after_every_rank_saved_it(
        self, zero2_run: FinetuneRun
    ) -> None:
        [checkpoint] = list_checkpoints(zero2_run.output_dir)

        assert (checkpoint.step, checkpoint.complete) == (MAX_STEPS, True)
        names = {path.name for path in checkpoint.path.iterdir()}
        assert {"rng_state_0.pth", "rng_state_1.pth", f"global_step{MAX_STEPS}"} <= names


class TestZero3Resume:
    def test_resumes_from_the_checkpoint_and_matches_the_uninterrupted_run(
        self, zero2_run: FinetuneRun, zero3_interrupted: FinetuneRun, zero3_resumed: FinetuneRun
    ) -> None:
        assert not zero3_interrupted.events(DONE_PREFIX)
        assert zero3_resumed.returncode == 0, zero3_resumed.stderr[-3000:]
        checkpoint = zero3_resumed.output_dir / f"checkpoint-{INTERRUPTED_AFTER}"
        assert f"{RESUME_NOTICE} {checkpoint} (step {INTERRUPTED_AFTER})" in zero3_resumed.stdout

        before = zero3_interrupted.losses()
        after = zero3_resumed.losses()
        reference = zero2_run.losses()
        assert list(after) == list(range(INTERRUPTED_AFTER + 1, MAX_STEPS + 1))
        assert {**before, **after} == pytest.approx(
            {step: reference[step] for step in {**before, **after}}, abs=1e-3
        )

    def test_saves_one_consolidated_model_that_reloads_and_generates(
        self, zero2_run: FinetuneRun, zero3_resumed: FinetuneRun
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        zero3 = final_weights(zero3_resumed)
        zero2 = final_weights(zero2_run)
        # ZeRO-2 also writes the output head tied to the embeddings; ZeRO-3 leaves it out.
        assert zero3.keys() == zero2.keys() - {"lm_head.weight"}
        for name, tensor in zero3.items():
            assert torch.allclose(tensor, zero2[name], atol=1e-4), name

        model = AutoModelForCausalLM.from_pretrained(zero3_resumed.output_dir)
        tokenizer = AutoTokenizer.from_pretrained(zero3_resumed.output_dir)
        prompt = tokenizer("Colour of grass?\nAnswer:", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
        assert generated.shape[1] == prompt["input_ids"].shape[1] + 3
        config = json.loads((zero3_resumed.output_dir / "config.json").read_text())
        assert config["model_type"] == "llama"
