"""The trainer as the control plane runs it: a real subprocess on the tiny model.

Each launch spends seconds importing torch and transformers, so one successful run is shared
by every assertion about it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ainfinity.train.protocol import (
    DONE_PREFIX,
    ERROR_PREFIX,
    METRIC_PREFIX,
    METRICS_FILE_ENV,
    TrainerEvent,
    parse_event,
)

from .builders import REPO_ROOT, SAMPLES_DIR, write_job_config, write_jsonl

MAX_STEPS = 30


@dataclass(frozen=True)
class FinetuneRun:
    """A finished trainer process and what it left behind."""

    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    def events(self, kind: str) -> list[TrainerEvent]:
        parsed = (parse_event(line) for line in self.stdout.splitlines())
        return [event for event in parsed if event is not None and event.kind == kind]


def run_finetune(workdir: Path, config: Path) -> FinetuneRun:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        METRICS_FILE_ENV: str(workdir / "metrics" / "metrics.jsonl"),
        # The checkout may not be pip-installed; the child must import this tree's package.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.run(
        [sys.executable, "-m", "ainfinity.train.finetune", "--config", str(config)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return FinetuneRun(process.returncode, process.stdout, process.stderr, workdir)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> FinetuneRun:
    workdir = tmp_path_factory.mktemp("finetune")
    config = write_job_config(workdir, dataset=SAMPLES_DIR / "tiny_sft.jsonl", max_steps=MAX_STEPS)
    return run_finetune(workdir, config)


class TestSuccessfulRun:
    def test_exits_zero_with_a_done_line(self, tiny_run: FinetuneRun) -> None:
        assert tiny_run.returncode == 0, tiny_run.stderr[-3000:]
        [done] = tiny_run.events(DONE_PREFIX)
        assert done.payload["output_dir"] == str(tiny_run.workdir / "output")
        assert math.isfinite(done.payload["train_loss"])
        assert not tiny_run.events(ERROR_PREFIX)

    def test_prints_one_metric_per_step_and_writes_the_same_to_the_file(
        self, tiny_run: FinetuneRun
    ) -> None:
        records = [event.payload for event in tiny_run.events(METRIC_PREFIX)]
        metrics_file = tiny_run.workdir / "metrics" / "metrics.jsonl"

        assert [record["step"] for record in records] == list(range(1, MAX_STEPS + 1))
        assert {record["total_steps"] for record in records} == {MAX_STEPS}
        file_records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
        assert file_records == records

    def test_loss_is_finite_and_falls(self, tiny_run: FinetuneRun) -> None:
        losses = [event.payload["loss"] for event in tiny_run.events(METRIC_PREFIX)]

        assert losses and all(math.isfinite(loss) for loss in losses)
        assert losses[-1] < losses[0] - 1.0, losses

    def test_saves_a_model_that_reloads_and_generates(self, tiny_run: FinetuneRun) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        output_dir = tiny_run.workdir / "output"
        model = AutoModelForCausalLM.from_pretrained(output_dir)
        tokenizer = AutoTokenizer.from_pretrained(output_dir)

        prompt = tokenizer("What is 2 plus 3?\nAnswer:", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)

        assert generated.shape[1] > prompt["input_ids"].shape[1]
        assert isinstance(tokenizer.decode(generated[0]), str)


def test_bad_dataset_row_fails_fast_with_invalid_dataset(tmp_path: Path) -> None:
    good = {"prompt": "What is 1 plus 1?\nAnswer:", "completion": " 2"}
    dataset = write_jsonl(tmp_path / "bad.jsonl", good, good, {"prompt": "no completion"})
    config = write_job_config(tmp_path, dataset=dataset)

    run = run_finetune(tmp_path, config)

    assert run.returncode == 1, run.stderr[-3000:]
    [error] = run.events(ERROR_PREFIX)
    assert error.payload["code"] == "invalid_dataset"
    assert error.payload["msg"].startswith("line 3: missing field 'completion'")
    assert not (tmp_path / "output").exists()
