"""`ainfinity models ...` and `ainfinity chat`, run as subprocesses against the shared server
with real fine-tuned models (answers compared with the official SDK's greedy ones), and
against a held-back stream to see the answer printed as it arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.builders import ROOT, job_body
from tests.serving.conftest import (
    ALICE_KEY,
    BOB_KEY,
    SAMPLE_CHAT,
    TRAINING,
    Served,
    wait_job,
)
from tests.serving.held_stream import HeldStream, error_chunk

pytestmark = pytest.mark.timeout(300)

FULL = "ft:tiny-random-llama:full-a"


@pytest.fixture(scope="module", autouse=True)
def doomed_job(served: Served) -> str:
    """A small job of this module's own, for the test that deletes its model: launched as
    the module starts, it trains while the other tests run."""
    body = job_body(
        name="cli-doomed",
        dataset=str(SAMPLE_CHAT),
        hyperparameters={**TRAINING, "max_steps": 2, "save_steps": None},
    )
    with served.api(ALICE_KEY) as api:
        response = api.post("/api/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return "cli-doomed"


def run_cli(
    url: str, *args: str, key: str = ALICE_KEY, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ainfinity", "--url", url, *args],
        env={**os.environ, "AINFINITY_API_KEY": key},
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def greedy(served: Served, model: str, messages: list[dict[str, str]], tokens: int) -> str:
    answer = served.sdk().chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=tokens,
    )
    return answer.choices[0].message.content or ""


def fields(output: str) -> list[tuple[str, str]]:
    """`field  value` lines (a field may be two words: `base model`, `eval loss`)."""
    rows = []
    for line in output.splitlines():
        name, _, value = line.strip().partition("  ")
        rows.append((name.strip(), value.strip()))
    return rows


class TestModelsCommands:
    def test_list_is_a_table_and_json(self, served: Served) -> None:
        with served.api(ALICE_KEY) as api:
            expected = api.get("/api/v1/models?limit=100").json()["data"]
        table = run_cli(served.server.url, "models", "list")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert header.split() == [
            "ID", "METHOD", "BASE", "JOB", "TRAIN", "LOSS", "EVAL", "LOSS", "SIZE", "CREATED",
        ]  # fmt: skip
        assert [row.split()[0] for row in rows] == [model["id"] for model in expected]
        full = next(row.split() for row in rows if row.startswith(FULL + " "))
        train_loss = next(m for m in expected if m["id"] == FULL)["metrics"]["train_loss"]
        assert full[:5] == [FULL, "full", "tiny-random-llama", "full-a", f"{train_loss:.4g}"]
        size = next(m for m in expected if m["id"] == FULL)["size_bytes"]
        assert full[6:8] == [f"{size / 1000:.1f}", "KB"]  # a size a person reads
        base = next(row.split() for row in rows if row.startswith("tiny-random-llama "))
        assert base[:4] == ["tiny-random-llama", "base", "-", "-"]

        listed = run_cli(served.server.url, "models", "list", "--json")
        assert json.loads(listed.stdout) == expected
        one = run_cli(served.server.url, "models", "list", "--limit", "1")
        assert len(one.stdout.splitlines()) == 3
        assert one.stdout.splitlines()[-1] == "(more models not shown; raise --limit above 1)"

    def test_get_shows_lineage_metrics_and_checkpoints(self, served: Served) -> None:
        detail = run_cli(served.server.url, "models", "get", FULL)
        assert detail.returncode == 0, detail.stderr
        rows = fields(detail.stdout)
        single = dict(rows)
        assert single["id"] == FULL and single["job"] == "full-a" and single["owner"] == "alice"
        assert single["method"] == "full" and single["base model"] == "tiny-random-llama"
        assert single["dataset"] == str(SAMPLE_CHAT)
        assert single["path"] == served.full["output_dir"]
        assert single["max_steps"] == "30" and single["learning_rate"] == "0.003"
        assert single["lr_scheduler_type"] == '"linear"'  # JSON, as the job was given it
        assert [value for name, value in rows if name == "checkpoint"] == [
            f"{FULL}:ckpt-{step}" for step in (10, 20, 30)
        ]
        as_json = json.loads(run_cli(served.server.url, "models", "get", FULL, "--json").stdout)
        with served.api(ALICE_KEY) as api:
            assert as_json == api.get(f"/api/v1/models/{FULL}").json()
        lora = dict(
            fields(run_cli(served.server.url, "models", "get", FULL[:-6] + "lora-a").stdout)
        )
        assert lora["method"] == "lora" and lora["r"] == "8"
        # The job points at its model too.
        job = dict(fields(run_cli(served.server.url, "jobs", "get", "full-a").stdout))
        assert job["fine-tuned model"] == FULL

    def test_errors_print_their_code(self, served: Served) -> None:
        hidden = run_cli(served.server.url, "models", "get", FULL, key=BOB_KEY)
        assert hidden.returncode == 1
        assert hidden.stderr.strip() == f"error model_not_found: The model {FULL!r} does not exist."
        base = run_cli(served.server.url, "models", "delete", "tiny-random-llama")
        assert base.returncode == 1
        assert base.stderr.startswith("error model_not_deletable: ")
        assert "Traceback" not in hidden.stderr + base.stderr

    def test_delete(self, served: Served, doomed_job: str) -> None:
        with served.api(ALICE_KEY) as api:
            model_id = wait_job(api, doomed_job)["fine_tuned_model"]
        deleted = run_cli(served.server.url, "models", "delete", model_id)
        assert (deleted.returncode, deleted.stdout) == (0, f"{model_id} deleted\n")
        gone = run_cli(served.server.url, "models", "get", model_id)
        assert gone.returncode == 1 and gone.stderr.startswith("error model_not_found: ")
        with served.api(ALICE_KEY) as api:
            assert api.get("/api/v1/jobs/cli-doomed").json()["status"] == "SUCCEEDED"


class TestChat:
    def test_one_shot_message_prints_the_answer(self, served: Served) -> None:
        system = {"role": "system", "content": "Answer briefly."}
        question = {"role": "user", "content": "What is 7 plus 1?"}
        result = run_cli(
            served.server.url, "chat", FULL, "-m", question["content"],
            "--system", system["content"], "--temperature", "0", "--max-tokens", "20",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == greedy(served, FULL, [system, question], 20) + "\n"

    def test_a_conversation_over_stdin_answers_each_turn_with_its_history(
        self, served: Served
    ) -> None:
        turns = ["What is 2 plus 2?", "And 3 plus 5?"]
        model = f"{FULL}:ckpt-10"
        result = run_cli(
            served.server.url, "chat", model, "--temperature", "0", "--max-tokens", "16",
            stdin="\n".join([turns[0], "", turns[1], "/exit", "never sent"]) + "\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        first = greedy(served, model, [{"role": "user", "content": turns[0]}], 16)
        history = [
            {"role": "user", "content": turns[0]},
            {"role": "assistant", "content": first},
            {"role": "user", "content": turns[1]},
        ]
        assert result.stdout == f"{first}\n{greedy(served, model, history, 16)}\n"

    def test_an_unknown_model_is_an_error(self, served: Served) -> None:
        result = run_cli(served.server.url, "chat", "ft:tiny-random-llama:nope", "-m", "hi")
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "error model_not_found: The model 'ft:tiny-random-llama:nope' does not exist."
        )
        assert result.stdout == ""


def read_until(stream: Any, text: str, timeout: float) -> str:
    """What the process printed, read as it comes, until `text` shows or time is up."""
    seen = b""
    done = threading.Event()

    def pump() -> None:
        nonlocal seen
        while text.encode() not in seen:
            data = os.read(stream.fileno(), 1024)
            if not data:
                break
            seen += data
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    done.wait(timeout)
    return seen.decode()


def test_chat_prints_the_answer_as_it_arrives() -> None:
    with HeldStream(["The answer", " is"], [" 4."]) as held:
        process = subprocess.Popen(
            [sys.executable, "-m", "ainfinity", "--url", held.url, "chat", "m", "-m", "2+2?"],
            env={**os.environ, "AINFINITY_API_KEY": "k"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            # The server holds back the rest: the first pieces can only come from a stream.
            assert read_until(process.stdout, "The answer is", timeout=30) == "The answer is"
            assert process.poll() is None
            held.release()
            rest, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert rest.decode() == " 4.\n"
    assert held.bodies[0]["stream"] is True


def test_each_turn_sends_the_whole_conversation() -> None:
    with HeldStream(["4", "."], []) as held:
        held.release()
        result = run_cli(
            held.url, "chat", "m", "--system", "Be brief.", "--max-tokens", "8",
            key="k", stdin="2+2?\n3+3?\n/reset\n1+1?\n",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4.\n4.\n4.\n"
    system = {"role": "system", "content": "Be brief."}
    assert [body["messages"] for body in held.bodies] == [
        [system, {"role": "user", "content": "2+2?"}],
        [
            system,
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "3+3?"},
        ],
        [system, {"role": "user", "content": "1+1?"}],  # after /reset
    ]
    assert all(body["max_tokens"] == 8 and body["stream"] for body in held.bodies)
    assert "temperature" not in held.bodies[0]  # unset: the server's default


def test_an_error_mid_answer_keeps_what_arrived_and_exits_1() -> None:
    failing = error_chunk("worker_unavailable", "The inference worker stopped while answering.")
    with HeldStream(["The answer"], [], ending=failing) as held:
        held.release()
        started = time.monotonic()
        result = run_cli(held.url, "chat", "m", "-m", "2+2?", key="k")
    assert result.returncode == 1
    assert result.stdout == "The answer\n"
    assert result.stderr == (
        "error worker_unavailable: The inference worker stopped while answering.\n"
    )
    assert time.monotonic() - started < 30
