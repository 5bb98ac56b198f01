"""Builders for training test data and runs: JSONL files, job configs, trainer processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ainfinity.train.protocol import METRIC_PREFIX, METRICS_FILE_ENV, TrainerEvent, parse_event

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO_ROOT / "samples"

# Questions whose answers a tiny model memorises within a few dozen steps: training on them
# shows the loss really falls, which addition (samples/tiny_sft.jsonl) does not so quickly.
_FACTS = [
    ("Opposite of hot?", " cold"),
    ("Opposite of up?", " down"),
    ("Colour of the sky?", " blue"),
    ("Colour of grass?", " green"),
    ("Sound a cat makes?", " meow"),
    ("Sound a dog makes?", " woof"),
    ("First letter?", " a"),
    ("Last letter?", " z"),
]


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Write raw lines (str) or rows (anything else, JSON-encoded) to a JSONL file."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def write_facts(path: Path, *, copies: int, seed: int = 0) -> Path:
    """Write `copies` shuffled copies of the memorisable prompt/completion facts."""
    rows = [{"prompt": f"{question}\nAnswer:", "completion": answer} for question, answer in _FACTS]
    rows *= copies
    random.Random(seed).shuffle(rows)
    return write_jsonl(path, *rows)


def job_config_data(workdir: Path, *, dataset: Path, **hyperparameters: Any) -> dict[str, Any]:
    """A job config like the control plane's, training the tiny model into workdir/output."""
    return {
        "name": "test-job",
        "model": "tiny-random-llama",
        "dataset": str(dataset),
        "output_dir": str(workdir / "output"),
        "hyperparameters": {
            "epochs": 1.0,
            "max_steps": None,
            "learning_rate": 0.005,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_seq_length": 256,
            "seed": 42,
            "warmup_ratio": 0.0,
            "logging_steps": 1,
            **hyperparameters,
        },
        "deepspeed": {"zero_stage": 2, "offload": False},
    }


def write_job_config(
    workdir: Path, *, dataset: Path, top_level: dict[str, Any] | None = None, **hyperparameters: Any
) -> Path:
    """Write `job_config_data` (with `top_level` keys merged in) to workdir/job_config.json."""
    config = {**job_config_data(workdir, dataset=dataset, **hyperparameters), **(top_level or {})}
    path = workdir / "job_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@dataclass(frozen=True)
class FinetuneRun:
    """A finished (or killed) trainer process and what it left behind."""

    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    def events(self, kind: str) -> list[TrainerEvent]:
        parsed = (parse_event(line) for line in self.stdout.splitlines())
        return [event for event in parsed if event is not None and event.kind == kind]

    def train_records(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.events(METRIC_PREFIX) if "loss" in e.payload]

    def eval_records(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.events(METRIC_PREFIX) if "eval_loss" in e.payload]

    def losses(self) -> dict[int, float]:
        return {record["step"]: record["loss"] for record in self.train_records()}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def trainer_env(workdir: Path) -> dict[str, str]:
    """The environment a launched trainer gets: one thread per rank, no hub, this checkout."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        # DeepSpeed's CPU accelerator, unless there is a GPU (bench/gpu_check.sh).
        **({} if _cuda() else {"DS_ACCELERATOR": "cpu"}),
        METRICS_FILE_ENV: str(workdir / "metrics" / "metrics.jsonl"),
        # The checkout may not be pip-installed; the child must import this tree's package.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def single_process_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "ainfinity.train.finetune", "--config", str(config)]


def deepspeed_command(config: Path, *, ranks: int, port: int) -> list[str]:
    """The `deepspeed` launcher as the SkyPilot task runs it; on CPU each rank is a process."""
    launcher = Path(sys.executable).with_name("deepspeed")
    return [
        str(launcher),
        "--num_gpus",
        str(ranks),
        "--master_port",
        str(port),
        "--module",
        "ainfinity.train.finetune",
        "--config",
        str(config),
        "--deepspeed",
    ]


def run_trainer(
    workdir: Path,
    command: Sequence[str],
    *,
    kill_when: Callable[[TrainerEvent], bool] | None = None,
    timeout: float = 300,
) -> FinetuneRun:
    """Run a trainer to its end, or SIGKILL its whole process group, as a spot preemption
    would, as soon as it prints an event that `kill_when` accepts."""
    with (workdir / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=trainer_env(workdir),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        # A hung trainer must not hang the suite: the reader below only ends at EOF.
        watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in process.stdout:
                lines.append(line)
                event = parse_event(line)
                if kill_when is not None and event is not None and kill_when(event):
                    os.killpg(process.pid, signal.SIGKILL)
                    break
            process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stderr.seek(0)
        return FinetuneRun(process.returncode, "".join(lines), stderr.read(), workdir)
