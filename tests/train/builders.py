"""Builders for training test data: JSONL files and job configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO_ROOT / "samples"


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Write raw lines (str) or rows (anything else, JSON-encoded) to a JSONL file."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def write_job_config(workdir: Path, *, dataset: Path, **hyperparameters: Any) -> Path:
    """Write a job config like the control plane's, training the tiny model into workdir."""
    config = {
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
    path = workdir / "job_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path
