"""The script a team runs against OpenAI's fine-tuning API, run unchanged against ainfinity:
the official SDK (strict) with only `base_url` and `api_key` changed, on a real server
training real (tiny) models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fine_tuning.conftest import (
    ALICE_KEY,
    BOB_KEY,
    SAMPLE_CHAT,
    SAMPLE_CHAT_VAL,
    sdk,
    train_losses,
    wait_job,
)
from tests.servers import UvicornServer

pytestmark = pytest.mark.timeout(600)

# The whole file in every step (64 rows): each epoch is one optimizer step on the same
# batch, so a model's loss is a function of its weights alone.
WHOLE_FILE = {"n_epochs": 20, "batch_size": 64, "learning_rate_multiplier": 150}
# Long enough to be paused mid-run: 12 epochs of 8 steps.
LONG = {"n_epochs": 12, "batch_size": 8, "learning_rate_multiplier": 150}
LONG_STEPS = 96


def supervised(hyperparameters: dict[str, Any]) -> Any:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def test_the_openai_fine_tuning_script_runs_unchanged(ft_server: UvicornServer) -> None:
    client = sdk(ft_server)

    # 1. Upload from a file on disk, and wait until it is processed.
    with SAMPLE_CHAT.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    with SAMPLE_CHAT_VAL.open("rb") as fh:
        validation = client.files.create(file=fh, purpose="fine-tune")
    training = client.files.wait_for_processing(uploaded.id, poll_interval=0.1)
    assert training.status == "processed" and training.id.startswith("file-")
    assert training.bytes == SAMPLE_CHAT.stat().st_size

    # 2. Create the job and poll it to the end.
    job = client.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=training.id,
        validation_file=validation.id,
        method=supervised(WHOLE_FILE),
        suffix="sdk",
        seed=7,
        metadata={"suite": "e2e", "owner": "alice"},
    )
    assert job.id.startswith("ftjob-") and job.status in ("validating_files", "queued")
    assert job.training_file == training.id and job.validation_file == validation.id
    assert job.method is not None and job.method.type == "supervised"
    # 6. Cancel a second job.
    second = client.fine_tuning.jobs.create(
        model="tiny-random-llama", training_file=training.id, method=supervised(LONG)
    )
    cancelled = client.fine_tuning.jobs.cancel(second.id)
    assert cancelled.status == "cancelled"

    done = wait_job(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny-random-llama:sdk:{job.id}"
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert done.trained_tokens is not None and done.trained_tokens > 0
    assert (done.hyperparameters.n_epochs, done.hyperparameters.batch_size) == (20, 64)
    assert done.seed == 7 and done.metadata == {"suite": "e2e", "owner": "alice"}
    assert done.user_provided_suffix == "sdk"  # type: ignore[attr-defined]

    # 4. Events (status messages and training metrics) and checkpoints.
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=7))
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    assert len({e.id for e in events}) == len(events)
    messages = [e.message for e in events if e.type == "message"]
    assert any("created" in m for m in messages)
    assert any(done.fine_tuned_model in m for m in messages)
    losses = train_losses(client, job.id)
    assert list(losses) == list(range(1, 21))
    assert losses[20] < losses[1] * 0.8
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    # One per epoch, the newest three kept, newest first.
    assert [c.step_number for c in checkpoints] == [20, 19, 18]
    for checkpoint in checkpoints:
        assert checkpoint.fine_tuning_job_id == job.id
        assert checkpoint.fine_tuned_model_checkpoint == (
            f"{done.fine_tuned_model}:ckpt-{checkpoint.step_number}"
        )
        assert checkpoint.metrics.train_loss == pytest.approx(losses[checkpoint.step_number])
        assert checkpoint.metrics.valid_loss is not None

    # 5. Chat with the fine-tuned model and with one of its checkpoints.
    for model in (done.fine_tuned_model, checkpoints[-1].fine_tuned_model_checkpoint):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is 2 plus 3?"}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.model == model and reply.choices[0].message.role == "assistant"
        assert reply.usage is not None and reply.usage.completion_tokens >= 1

    # 7. Pause and resume a third job: its losses are those of a run never paused.
    third = client.fine_tuning.jobs.create(
        model="tiny-random-llama", training_file=training.id, method=supervised(LONG), seed=11
    )
    reference = client.fine_tuning.jobs.create(
        model="tiny-random-llama", training_file=training.id, method=supervised(LONG), seed=11
    )
    wait_until_step(client, third.id, 3)
    pausing = client.fine_tuning.jobs.pause(third.id)
    assert pausing.status == "running"
    paused = wait_job(client, third.id, {"queued", "failed", "succeeded"})
    assert (paused.status, paused.ainfinity_status) == ("queued", "PAUSED")  # type: ignore[attr-defined]
    at = max(train_losses(client, third.id))
    assert 3 <= at < LONG_STEPS
    resumed = client.fine_tuning.jobs.resume(third.id)
    assert resumed.status == "queued"
    assert wait_job(client, third.id).status == "succeeded"
    assert wait_job(client, reference.id).status == "succeeded"
    after, never_paused = train_losses(client, third.id), train_losses(client, reference.id)
    assert list(after) == list(range(1, LONG_STEPS + 1)) == list(never_paused)
    for step in range(at + 1, LONG_STEPS + 1):
        assert abs(after[step] - never_paused[step]) < 1e-3, (step, after[step])

    # Continuing training: an `ft:` model starts from its weights. One step on the same
    # whole file: its loss is the first model's last one, less one tiny (decayed) update.
    more = client.fine_tuning.jobs.create(
        model=done.fine_tuned_model,
        training_file=training.id,
        method=supervised({"n_epochs": 1, "batch_size": 64, "learning_rate_multiplier": 1}),
    )
    continued = wait_job(client, more.id)
    assert continued.status == "succeeded" and continued.model == done.fine_tuned_model
    assert continued.fine_tuned_model == f"ft:tiny-random-llama:{more.id}"
    first = train_losses(client, more.id)[1]
    assert abs(first - losses[20]) < 0.02 * losses[20], (first, losses[20], losses[1])

    # 3. List every job, auto-paginating two at a time (3 pages), newest first.
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert listed == [more.id, reference.id, third.id, second.id, job.id]
    page = client.fine_tuning.jobs.list(limit=2)
    assert page.has_more and len(page.data) == 2
    tagged = client.fine_tuning.jobs.list(metadata={"suite": "e2e"})
    assert [j.id for j in tagged.data] == [job.id]

    # The same jobs are native jobs: same store, events and dashboard.
    with ft_server.client(ALICE_KEY) as api:
        native = api.get(f"/api/v1/jobs/{job.id}").json()
    assert native["status"] == "SUCCEEDED" and native["fine_tuned_model"] == done.fine_tuned_model
    assert native["spec"]["hyperparameters"]["save_total_limit"] == 3

    # Another key sees none of it.
    other = sdk(ft_server, BOB_KEY)
    assert list(other.fine_tuning.jobs.list()) == []
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(training.id)


def test_preference_tuning_through_the_sdk(ft_server: UvicornServer, tmp_path: Path) -> None:
    client = sdk(ft_server)
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Is {n} fine?"}]},
            "preferred_output": [{"role": "assistant", "content": "Yes!"}],
            "non_preferred_output": [{"role": "assistant", "content": "no."}],
        }
        for n in range(32)
    ]
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with path.open("rb") as fh:
        preferences = client.files.create(file=fh, purpose="fine-tune")
    assert preferences.status == "processed"

    job = client.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=preferences.id,
        method={
            "type": "dpo",
            "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 8}},
        },
    )
    done = wait_job(client, job.id)

    assert done.status == "succeeded", done.error
    assert done.method is not None and done.method.type == "dpo" and done.method.dpo
    hyperparameters = done.method.dpo.hyperparameters
    assert hyperparameters is not None
    assert (hyperparameters.beta, hyperparameters.n_epochs) == (0.2, 2)
    rewards = [
        e.data
        for e in client.fine_tuning.jobs.list_events(job.id, limit=50)
        if e.type == "metrics" and "rewards/accuracies" in (e.data or {})  # type: ignore[operator]
    ]
    assert len(rewards) == 8  # 2 epochs of 4 steps, each with DPO's figures


def wait_until_step(client: openai.OpenAI, job_id: str, step: int) -> None:
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        latest = client.fine_tuning.jobs.list_events(job_id, limit=1).data
        data: dict[str, Any] = (latest[0].data or {}) if latest else {}  # type: ignore[assignment]
        if latest and latest[0].type == "metrics" and int(data.get("step", 0)) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never reached step {step}")
