"""Real jobs: a tiny model really fine-tunes in a subprocess, driven over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, ROOT, job_body, wait_for, wait_until

pytestmark = pytest.mark.timeout(300)


def statuses(client: TestClient, name: str) -> list[str]:
    events = client.get(f"/api/v1/jobs/{name}/events").json()["data"]
    return [e["status"] for e in events if e["type"] in ("created", "status_changed")]


def job_pgid(settings: Settings, name: str) -> int:
    record = json.loads((settings.home / "jobs" / name / "job.json").read_text())
    return int(record["executor_state"]["pgid"])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_job_trains_to_success(runner: TestClient, runner_settings: Settings) -> None:
    marker = Path("/tmp") / f"ainfinity-pwned-{uuid.uuid4().hex}"
    body = job_body(
        name="e2e",
        dataset=str(ROOT / "samples" / "tiny_chat.jsonl"),
        validation_dataset=str(ROOT / "samples" / "tiny_chat_val.jsonl"),
        hyperparameters={
            "max_steps": 24,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "max_seq_length": 128,
            "logging_steps": 2,
            "seed": 7,
            "save_steps": 8,
            "save_total_limit": 2,
        },
        # Hostile, but only data: the job must run it as a string and nothing else.
        metadata={"note": f"$(touch {marker}); `touch {marker}`"},
    )
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    job = wait_for(runner, "e2e", {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["status"] == "SUCCEEDED", runner.get("/api/v1/jobs/e2e/logs").text
    assert not marker.exists()

    assert statuses(runner, "e2e") == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    assert job["started_at"] <= job["finished_at"]

    metrics = runner.get("/api/v1/jobs/e2e/metrics").json()["data"]
    train = [m for m in metrics if m["loss"] is not None]
    evals = [m for m in metrics if m["eval_loss"] is not None]
    assert [m["step"] for m in train] == list(range(2, 25, 2))
    assert all(m["learning_rate"] is not None and m["tokens_per_second"] > 0 for m in train)
    assert train[-1]["loss"] < train[0]["loss"]
    # Evaluated before the first step, then at each checkpoint (no eval_steps given).
    assert [m["step"] for m in evals] == [0, 8, 16, 24]
    before, after = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert (job["eval_loss_before"], job["eval_loss_after"]) == (before, after)
    assert after < before and job["eval_gain"] == round((before - after) / before, 4)
    assert job["progress"] == {
        "step": 24,
        "total_steps": 24,
        "percent": 100.0,
        "loss": train[-1]["loss"],
        "eval_loss": evals[-1]["eval_loss"],
        "eta_seconds": 0.0,
        "tokens_per_second": train[-1]["tokens_per_second"],
    }

    checkpoints = runner.get("/api/v1/jobs/e2e/checkpoints").json()["data"]
    loss_at = {m["step"]: m["loss"] for m in train}
    assert [(c["name"], c["step"], c["complete"]) for c in checkpoints] == [
        ("checkpoint-16", 16, True),
        ("checkpoint-24", 24, True),
    ]
    assert [c["loss"] for c in checkpoints] == [loss_at[16], loss_at[24]]

    logs = runner.get("/api/v1/jobs/e2e/logs", params={"raw": True}).text
    assert logs.count("ainfinity-metric ") == len(metrics)
    tail = runner.get("/api/v1/jobs/e2e/logs", params={"tail": 3, "raw": True}).text
    assert tail.splitlines() == logs.splitlines()[-3:]
    readable = runner.get("/api/v1/jobs/e2e/logs").text.splitlines()
    assert "ainfinity-metric" not in "".join(readable)
    assert sum(line.startswith("step ") for line in readable) == len(train)
    assert sum(line.startswith("eval  step ") for line in readable) == len(evals)

    output = Path(job["output_dir"])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    chat = [{"role": "user", "content": "What is 2 plus 2?"}]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]


def test_failed_run_reports_why(runner: TestClient) -> None:
    # A dataset that passes the API's check but breaks before training is simulated by
    # deleting it between launch and run: the trainer must report it, not just crash.
    body = job_body(name="broken", model="tiny-random-llama")
    dataset = Path(runner.app.state.settings.home).parent / "vanishing.jsonl"  # type: ignore[attr-defined]
    dataset.write_text('{"text": "a row"}\n')
    body["dataset"] = str(dataset)
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    dataset.unlink()
    job = wait_for(runner, "broken", {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert job["status"] == "FAILED"
    assert job["failure_reason"].startswith("invalid_dataset"), job["failure_reason"]
    # The last lines of the log come with it, the trainer's error line last.
    assert job["failure_log"][-1].startswith("ainfinity-error {")
    assert "invalid_dataset" in job["failure_log"][-1]


def test_cancel_stops_the_whole_process_group(
    runner: TestClient, runner_settings: Settings
) -> None:
    body = job_body(
        name="long",
        hyperparameters={"max_steps": 1_000_000, "logging_steps": 1, "max_seq_length": 64},
    )
    runner.post("/api/v1/jobs", json=body)
    wait_for(runner, "long", {"RUNNING"})
    # Wait for training proper, so the trainer and its threads exist when we cancel.
    wait_until(lambda: runner.get("/api/v1/jobs/long/metrics").json()["data"], timeout=90)
    pgid = job_pgid(runner_settings, "long")
    assert group_alive(pgid)

    response = runner.post("/api/v1/jobs/long/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "CANCELLING"
    job = wait_for(runner, "long", {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=30)
    assert job["status"] == "CANCELLED"
    assert not group_alive(pgid)
    assert statuses(runner, "long")[-2:] == ["CANCELLING", "CANCELLED"]
    events = runner.get("/api/v1/jobs/long/events").json()["data"]
    assert {"type": "cancel_requested", "actor": "tester"}.items() <= events[-3].items()
    assert runner.delete("/api/v1/jobs/long").status_code == 204


def test_job_survives_a_server_restart(make_settings: object) -> None:
    settings = make_settings(local_max_jobs=1)  # type: ignore[operator]
    body = job_body(
        name="survivor", hyperparameters={"max_steps": 30, "logging_steps": 5, "max_seq_length": 64}
    )
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as first:
        assert first.post("/api/v1/jobs", json=body).status_code == 202
        wait_for(first, "survivor", {"RUNNING"})
    # The first server is gone; its job is not.
    pgid = job_pgid(settings, "survivor")
    assert group_alive(pgid)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as second:
        job = wait_for(second, "survivor", {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert job["status"] == "SUCCEEDED", second.get("/api/v1/jobs/survivor/logs").text
        assert job["progress"]["step"] == 30
        assert statuses(second, "survivor") == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]


def test_jobs_beyond_capacity_wait_in_the_queue(make_settings: object) -> None:
    settings = make_settings(local_max_jobs=1)  # type: ignore[operator]
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        long = job_body(name="first-in", hyperparameters={"max_steps": 1_000_000})
        client.post("/api/v1/jobs", json=long)
        client.post("/api/v1/jobs", json=job_body(name="second-in"))
        wait_for(client, "first-in", {"RUNNING"})
        assert client.get("/api/v1/jobs/second-in").json()["status"] == "PENDING"
        client.post("/api/v1/jobs/first-in/cancel")
        wait_for(client, "first-in", {"CANCELLED"}, timeout=30)
        # The freed slot goes to the queued job.
        wait_for(client, "second-in", {"STARTING", "RUNNING", "SUCCEEDED"}, timeout=30)
        client.post("/api/v1/jobs/second-in/cancel")
        wait_for(client, "second-in", {"CANCELLED", "SUCCEEDED"}, timeout=30)


def test_changes_are_seen_without_waiting_for_a_tick(make_settings: object) -> None:
    # With a one-minute tick, only the wake-ups (after a launch, at a job's exit) can move
    # this job along within the wait below.
    settings = make_settings(local_max_jobs=1, reconcile_interval_seconds=60)  # type: ignore[operator]
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        client.post("/api/v1/jobs", json=job_body(name="prompt"))
        job = wait_for(client, "prompt", {"SUCCEEDED", "FAILED"}, timeout=50)
        assert job["status"] == "SUCCEEDED"
        assert statuses(client, "prompt") == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]


def test_a_pass_reads_no_queued_job_and_launches_the_oldest_first(
    make_settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(local_max_jobs=0)  # type: ignore[operator]
    app = create_app(settings)
    long_run = {"max_steps": 1_000_000}
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        # Created newest-name first, so that the oldest job is not the first name.
        names = [f"queued-{n:02d}" for n in reversed(range(12))]
        for name in names:
            body = job_body(name=name, hyperparameters=long_run)
            assert client.post("/api/v1/jobs", json=body).status_code == 202
        store = app.state.store
        reads: list[str] = []
        passes: list[int] = []
        get, active_names = store.get, store.active_names
        monkeypatch.setattr(store, "get", lambda name: reads.append(name) or get(name))
        monkeypatch.setattr(store, "active_names", lambda: passes.append(1) or active_names())
        # The background reconciler passes every 0.2 s (the test settings' tick).
        wait_until(lambda: len(passes) >= 3, timeout=30)
        assert reads == []  # a queue of any length costs one index query per pass

        settings.local_max_jobs = 1
        oldest = names[0]
        wait_for(client, oldest, {"STARTING", "RUNNING"}, timeout=30)
        settings.local_max_jobs = 0  # nothing takes the slot the cancel frees
        also_launched = [
            n for n in names[1:] if client.get(f"/api/v1/jobs/{n}").json()["status"] != "PENDING"
        ]
        assert also_launched == []
        client.post(f"/api/v1/jobs/{oldest}/cancel")
        wait_for(client, oldest, {"CANCELLED"}, timeout=30)


def test_a_trainer_killed_by_sigkill_fails_as_killed_with_its_memory(
    runner: TestClient, runner_settings: Settings
) -> None:
    body = job_body(name="oom", hyperparameters={"max_steps": 1_000_000, "max_seq_length": 64})
    assert runner.post("/api/v1/jobs", json=body).status_code == 202
    wait_for(runner, "oom", {"RUNNING"})
    record = runner_settings.home / "jobs" / "oom" / "job.json"
    # The job's memory is watched while it runs...
    wait_until(lambda: "rss_bytes" in json.loads(record.read_text())["executor_state"])
    wait_until(lambda: (runner.get("/api/v1/jobs/oom").json()["progress"] or {}).get("step"))
    pgid = job_pgid(runner_settings, "oom")
    trainers = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and os.getpgid(int(pid)) == pgid and _is_trainer(int(pid))
    ]
    assert len(trainers) == 1, trainers

    # ...so that when the kernel (here, the test) kills it, the reason says what it had.
    os.kill(trainers[0], signal.SIGKILL)

    job = wait_for(runner, "oom", {"FAILED", "SUCCEEDED", "CANCELLED"})
    assert job["status"] == "FAILED"
    reason = job["failure_reason"]
    assert reason.startswith("killed: the training process was killed with SIGKILL")
    assert "out-of-memory killer" in reason
    assert re.search(r"it used \d+\.\d\d GiB of memory when last seen$", reason), reason


def _is_trainer(pid: int) -> bool:
    try:
        return b"ainfinity.train.finetune" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
