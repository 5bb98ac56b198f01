"""The trainer as the control plane runs it: real subprocesses on the tiny model.

Each launch spends seconds importing torch and transformers, so one successful run is shared
by every assertion about it, and the resume test reuses it as its uninterrupted reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.checkpoints import (
    MARKER_NAME,
    latest_complete_checkpoint,
    list_checkpoints,
)
from ainfinity.train.protocol import (
    DATASET_PREFIX,
    DONE_PREFIX,
    ERROR_PREFIX,
    METRIC_PREFIX,
    RESUME_NOTICE,
    TrainerEvent,
)

from .builders import (
    FinetuneRun,
    run_trainer,
    single_process_command,
    write_facts,
    write_job_config,
    write_jsonl,
)

MAX_STEPS = 60
SAVE_STEPS = 20
BATCH_SIZE = 4
ROWS = 64
# Stopped right after this step's checkpoint was marked complete, as a preemption would.
INTERRUPTED_AFTER = 20
TRAIN_FIELDS = {
    "step",
    "total_steps",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "tokens",
    "tokens_per_second",
    "samples_per_second",
    "step_time_seconds",
    "time",
}


def facts_job(workdir: Path) -> Path:
    """The job both the reference and the interrupted run train: same data, same seed."""
    dataset = write_facts(workdir / "train.jsonl", copies=ROWS // 8)
    validation = write_facts(workdir / "validation.jsonl", copies=2, seed=1)
    return write_job_config(
        workdir,
        dataset=dataset,
        top_level={"validation_dataset": str(validation)},
        max_steps=MAX_STEPS,
        learning_rate=0.01,
        batch_size=BATCH_SIZE,
        save_steps=SAVE_STEPS,
        save_total_limit=2,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("finetune")
    return run_trainer(workdir, single_process_command(facts_job(workdir)))


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("interrupted")

    def after_checkpoint(event: TrainerEvent) -> bool:
        # The next step's record is printed only after checkpoint-20 was saved and marked.
        return event.kind == METRIC_PREFIX and event.payload.get("step") == INTERRUPTED_AFTER + 1

    return run_trainer(
        workdir, single_process_command(facts_job(workdir)), kill_when=after_checkpoint
    )


@pytest.fixture(scope="module")
def resumed_run(interrupted_run: FinetuneRun) -> FinetuneRun:
    # What a preemption during the next save leaves: a checkpoint directory with no marker.
    half_written = interrupted_run.output_dir / f"checkpoint-{INTERRUPTED_AFTER + SAVE_STEPS}"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\x00" * 100)
    config = interrupted_run.workdir / "job_config.json"
    return run_trainer(interrupted_run.workdir, single_process_command(config))


def dataset_tokens(path: Path, tokenizer: Any) -> int:
    from ainfinity.train.dataset import load_examples

    examples = load_examples(path, tokenizer, max_seq_length=256)
    return sum(len(example["input_ids"]) for example in examples)


class TestSuccessfulRun:
    def test_exits_zero_with_a_done_line(self, tiny_run: FinetuneRun) -> None:
        assert tiny_run.returncode == 0, tiny_run.stderr[-3000:]
        [done] = tiny_run.events(DONE_PREFIX)
        assert done.payload["output_dir"] == str(tiny_run.output_dir)
        assert math.isfinite(done.payload["train_loss"])
        assert not tiny_run.events(ERROR_PREFIX)

    def test_reports_the_datasets_token_statistics_once_before_training(
        self, tiny_run: FinetuneRun
    ) -> None:
        [dataset] = tiny_run.events(DATASET_PREFIX)
        first_metric = next(
            i for i, line in enumerate(tiny_run.stdout.splitlines()) if METRIC_PREFIX in line
        )

        assert DATASET_PREFIX in tiny_run.stdout.splitlines()[first_metric - 1]
        stats = dataset.payload
        assert stats["format"] == "prompt_completion"
        assert (stats["rows"], stats["max_seq_length"], stats["truncated_rows"]) == (ROWS, 256, 0)
        assert 0 < stats["min"] <= stats["mean"] <= stats["p95"] <= stats["max"]

    def test_prints_one_record_per_step_and_writes_the_same_to_the_file(
        self, tiny_run: FinetuneRun
    ) -> None:
        records = [event.payload for event in tiny_run.events(METRIC_PREFIX)]
        metrics_file = tiny_run.workdir / "metrics" / "metrics.jsonl"
        train = tiny_run.train_records()

        assert [record["step"] for record in train] == list(range(1, MAX_STEPS + 1))
        assert all(set(record) == TRAIN_FIELDS for record in train)
        # The starting model's evaluation comes before training knows its length.
        assert {record["total_steps"] for record in records if record["step"]} == {MAX_STEPS}
        assert records[0]["step"] == 0 and records[0]["total_steps"] is None
        assert [json.loads(line) for line in metrics_file.read_text().splitlines()] == records

    def test_rates_count_every_example_and_non_padding_token(
        self, tiny_run: FinetuneRun, byte_tokenizer: Any
    ) -> None:
        train = tiny_run.train_records()
        # One step per record, so rate x step time is what that step trained on.
        examples = [r["samples_per_second"] * r["step_time_seconds"] for r in train]
        tokens = [r["tokens_per_second"] * r["step_time_seconds"] for r in train]
        steps_per_epoch = ROWS // BATCH_SIZE

        assert examples == pytest.approx([BATCH_SIZE] * MAX_STEPS)
        expected = dataset_tokens(tiny_run.workdir / "train.jsonl", byte_tokenizer)
        assert sum(tokens[:steps_per_epoch]) == pytest.approx(expected)
        assert all(r["step_time_seconds"] > 0 and r["grad_norm"] > 0 for r in train)

    def test_learning_rate_decays_linearly_from_the_configured_rate(
        self, tiny_run: FinetuneRun
    ) -> None:
        rates = [record["learning_rate"] for record in tiny_run.train_records()]

        assert rates[0] == pytest.approx(0.01)
        assert rates[-1] == pytest.approx(0.01 / MAX_STEPS)

    def test_loss_falls_below_a_third_of_the_first(self, tiny_run: FinetuneRun) -> None:
        losses = list(tiny_run.losses().values())

        assert all(math.isfinite(loss) for loss in losses)
        assert losses[-1] < 0.3 * losses[0], losses

    def test_evaluates_the_validation_set_at_every_checkpoint(self, tiny_run: FinetuneRun) -> None:
        evals = tiny_run.eval_records()

        # Before the first step too: the starting model's validation loss.
        assert [record["step"] for record in evals] == [0, 20, 40, 60]
        assert set(evals[0]) == {"step", "total_steps", "epoch", "eval_loss", "time"}
        assert evals[-1]["eval_loss"] < evals[1]["eval_loss"] < evals[0]["eval_loss"]

    def test_keeps_the_newest_checkpoints_each_marked_with_its_losses(
        self, tiny_run: FinetuneRun
    ) -> None:
        checkpoints = list_checkpoints(tiny_run.output_dir)
        losses = tiny_run.losses()
        eval_losses = {record["step"]: record["eval_loss"] for record in tiny_run.eval_records()}

        assert [(c.name, c.complete) for c in checkpoints] == [
            ("checkpoint-40", True),
            ("checkpoint-60", True),
        ]
        for checkpoint in checkpoints:
            assert checkpoint.loss == losses[checkpoint.step]
            assert checkpoint.eval_loss == eval_losses[checkpoint.step]
        assert latest_complete_checkpoint(tiny_run.output_dir) == checkpoints[-1].path

    def test_saves_a_model_that_reloads_and_generates(self, tiny_run: FinetuneRun) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(tiny_run.output_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_run.output_dir)

        prompt = tokenizer("Colour of the sky?\nAnswer:", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)

        assert generated.shape[1] > prompt["input_ids"].shape[1]
        assert isinstance(tokenizer.decode(generated[0]), str)


class TestResume:
    """A run killed after a checkpoint and relaunched ends as if it had never stopped."""

    def test_the_interrupted_run_stopped_after_its_first_checkpoint(
        self, interrupted_run: FinetuneRun
    ) -> None:
        assert interrupted_run.returncode != 0
        assert not interrupted_run.events(DONE_PREFIX)
        checkpoint = interrupted_run.output_dir / f"checkpoint-{INTERRUPTED_AFTER}"
        assert (checkpoint / MARKER_NAME).is_file()

    def test_resumes_from_the_newest_complete_checkpoint_and_says_so(
        self, resumed_run: FinetuneRun
    ) -> None:
        assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
        checkpoint = resumed_run.output_dir / f"checkpoint-{INTERRUPTED_AFTER}"
        notice = f"{RESUME_NOTICE} {checkpoint} (step {INTERRUPTED_AFTER})"
        assert notice in resumed_run.stdout.splitlines()
        assert min(resumed_run.losses()) == INTERRUPTED_AFTER + 1

    def test_later_losses_match_the_uninterrupted_run(
        self, tiny_run: FinetuneRun, resumed_run: FinetuneRun
    ) -> None:
        resumed = resumed_run.losses()
        reference = {step: tiny_run.losses()[step] for step in resumed}
        reference_evals = [
            record["eval_loss"]
            for record in tiny_run.eval_records()
            if record["step"] > INTERRUPTED_AFTER
        ]

        assert list(resumed) == list(range(INTERRUPTED_AFTER + 1, MAX_STEPS + 1))
        assert resumed == pytest.approx(reference, abs=1e-3)
        resumed_evals = [record["eval_loss"] for record in resumed_run.eval_records()]
        assert resumed_evals == pytest.approx(reference_evals, abs=1e-3)
        [done] = resumed_run.events(DONE_PREFIX)
        [reference_done] = tiny_run.events(DONE_PREFIX)
        assert done.payload["train_loss"] == pytest.approx(
            reference_done.payload["train_loss"], abs=1e-3
        )

    def test_replaces_the_half_written_checkpoint(self, resumed_run: FinetuneRun) -> None:
        checkpoints = list_checkpoints(resumed_run.output_dir)

        assert [(c.step, c.complete) for c in checkpoints] == [(40, True), (60, True)]
        assert (checkpoints[0].path / "model.safetensors").stat().st_size > 100


def test_bad_dataset_row_fails_fast_with_invalid_dataset(tmp_path: Path) -> None:
    good = {"prompt": "What is 1 plus 1?\nAnswer:", "completion": " 2"}
    dataset = write_jsonl(tmp_path / "bad.jsonl", good, good, {"prompt": "no completion"})
    config = write_job_config(tmp_path, dataset=dataset)

    run = run_trainer(tmp_path, single_process_command(config))

    assert run.returncode == 1, run.stderr[-3000:]
    [error] = run.events(ERROR_PREFIX)
    assert error.payload["code"] == "invalid_dataset"
    assert error.payload["msg"].startswith("line 3: missing field 'completion'")
    assert not (tmp_path / "output").exists()


def test_a_validation_set_of_another_format_fails_with_invalid_dataset(tmp_path: Path) -> None:
    dataset = write_facts(tmp_path / "train.jsonl", copies=1)
    validation = write_jsonl(tmp_path / "validation.jsonl", {"text": "plain text"})
    config = write_job_config(
        tmp_path, dataset=dataset, top_level={"validation_dataset": str(validation)}
    )

    run = run_trainer(tmp_path, single_process_command(config))

    assert run.returncode == 1, run.stderr[-3000:]
    [error] = run.events(ERROR_PREFIX)
    assert error.payload["code"] == "invalid_dataset"
    assert error.payload["msg"].startswith("validation_dataset: 'text' data")
