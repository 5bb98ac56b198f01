"""The recipe on one GPU: bf16 training, packing with sdpa (and flash-attn when installed),
the `deepspeed` launcher with ZeRO-2 and ZeRO-3, and a real job through the API."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from tests.builders import API_KEY, ROOT, job_body, wait_for
from tests.conftest import MakeSettings
from tests.servers import free_port
from tests.train.builders import (
    FinetuneRun,
    deepspeed_command,
    run_trainer,
    single_process_command,
    write_facts,
    write_job_config,
)

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

STEPS = 30


def gpu_run(workdir: Path, command_for: str, **hyperparameters: object) -> FinetuneRun:
    """Train the tiny model on the GPU, one process or under the deepspeed launcher."""
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = write_facts(workdir / "train.jsonl", copies=8)
    config = write_job_config(
        workdir,
        dataset=dataset,
        top_level={"validation_dataset": str(dataset)},
        **{"max_steps": STEPS, "batch_size": 8, "learning_rate": 3e-3, **hyperparameters},
    )
    command = (
        deepspeed_command(config, ranks=1, port=free_port())
        if command_for == "deepspeed"
        else single_process_command(config)
    )
    run = run_trainer(workdir, command, timeout=500)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def assert_learnt(run: FinetuneRun) -> None:
    losses = list(run.losses().values())
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    evals = run.eval_records()
    assert evals[0]["step"] == 0 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]


def test_bf16_training_on_the_gpu(tmp_path: Path) -> None:
    import torch

    assert torch.cuda.is_bf16_supported()
    run = gpu_run(tmp_path, "single", logging_steps=1, save_steps=None)
    assert_learnt(run)
    assert f"ainfinity: training on {torch.cuda.get_device_name()} in bf16" in run.stdout


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_packing(tmp_path: Path, attention: str) -> None:
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed here")
    run = gpu_run(
        tmp_path,
        "single",
        packing=True,
        attn_implementation=attention,
        max_seq_length=256,
        logging_steps=1,
        save_steps=None,
    )
    assert_learnt(run)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_launcher_on_one_gpu(tmp_path: Path, stage: int) -> None:
    workdir = tmp_path / f"zero{stage}"
    workdir.mkdir()
    dataset = write_facts(workdir / "train.jsonl", copies=8)
    config = write_job_config(
        workdir,
        dataset=dataset,
        top_level={"validation_dataset": str(dataset), "deepspeed": {"zero_stage": stage}},
        max_steps=STEPS,
        batch_size=8,
        learning_rate=3e-3,
        logging_steps=1,
        save_steps=STEPS,
    )
    run = run_trainer(workdir, deepspeed_command(config, ranks=1, port=free_port()), timeout=500)
    assert run.returncode == 0, run.stderr[-4000:]
    assert_learnt(run)
    # ZeRO-3 gathers its shards into one model that reloads.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(workdir / "output")


def test_a_job_through_the_api_trains_on_the_gpu(make_settings: MakeSettings) -> None:
    settings = make_settings(local_max_jobs=1, local_gpus=1)
    body = job_body(
        name="on-gpu",
        dataset=str(ROOT / "samples" / "tiny_chat.jsonl"),
        validation_dataset=str(ROOT / "samples" / "tiny_chat_val.jsonl"),
        hyperparameters={"max_steps": STEPS, "batch_size": 8, "learning_rate": 3e-3,
                         "max_seq_length": 128, "logging_steps": 5},
    )  # fmt: skip
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        assert client.post("/api/v1/jobs", json=body).status_code == 202
        job = wait_for(client, "on-gpu", {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout=500)
        logs = client.get("/api/v1/jobs/on-gpu/logs", params={"raw": True}).text
    assert job["status"] == "SUCCEEDED", logs[-4000:]
    # The task's GPU branch ran: the deepspeed launcher, with this machine's one GPU.
    assert "deepspeed" in logs.lower()
    assert job["eval_loss_after"] < job["eval_loss_before"]
