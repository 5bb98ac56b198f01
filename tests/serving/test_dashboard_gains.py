"""Did it get better? The dashboard against one real LoRA job with a validation set, trained
from a model directory by a real server: the job page shows the eval loss before training (as
soon as the trainer measured it), after it, and the change, all as the API gives them, with the
layers LoRA adapts, a loss chart from step 0 and a readable log; the model page shows the same
figures, and its compare mode streams the base model's and the fine-tuned model's greedy
answers side by side (equal to the API's), and says so when the base model is not served.

Debian's chromium is used as it is, as in tests/test_dashboard.py."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from tests.builders import ROOT, job_body
from tests.servers import UvicornServer
from tests.serving.conftest import (
    ALICE_KEY,
    SAMPLE_CHAT,
    save_tiny_model,
    sdk_client,
    serving_server,
    wait_job,
)
from tests.serving.test_dashboard_models import CHAT_PATH, Dashboard
from tests.test_dashboard import CHROMIUM

pytestmark = pytest.mark.timeout(300)

JOB = "gains"
BASE = "house-llama"  # the model directory's name: the id /v1 serves it under
MODEL = f"ft:{BASE}:{JOB}"
CHECKPOINT = f"{MODEL}:ckpt-10"
SAMPLE_VAL = ROOT / "samples" / "tiny_chat_val.jsonl"
SCREENSHOT_FOR_DOCS = ROOT / "docs" / "img" / "models.png"
# Whole conversations learnt at a high rate, so that the fine-tuned model's greedy answers
# differ visibly from the base model's; an evaluation at steps 0, 10 and 20.
TRAINING = {
    "max_steps": 20,
    "batch_size": 4,
    "learning_rate": 3e-2,
    "max_seq_length": 128,
    "logging_steps": 5,
    "eval_steps": 10,
    "save_steps": 10,
    "save_total_limit": None,
    "completion_only_loss": False,
}
TOKENS = 24
PROMPT = "What is 8 plus 4?"


@dataclass(frozen=True)
class Trained:
    server: UvicornServer
    base_dir: Path  # in AINFINITY_MODEL_DIRS; the job names it by its path

    def job(self) -> dict[str, Any]:
        """The job, once it has finished (SUCCEEDED, or the test fails)."""
        with self.server.client(ALICE_KEY) as api:
            job = wait_job(api, JOB, timeout=240)
        assert job["status"] == "SUCCEEDED", job
        return job

    def greedy(self, model: str, prompt: str = PROMPT) -> str:
        answer = sdk_client(self.server).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=TOKENS,
        )
        return answer.choices[0].message.content or ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A server, and the job launched on it (not waited for: the first test watches it run)."""
    tmp = tmp_path_factory.mktemp("gains")
    base_dir = save_tiny_model(tmp / "models" / BASE)
    server = serving_server(tmp, AINFINITY_RECONCILE_INTERVAL_SECONDS="0.3")
    with server:
        body = job_body(
            name=JOB,
            model=str(base_dir),
            dataset=str(SAMPLE_CHAT),
            validation_dataset=str(SAMPLE_VAL),
            method="lora",
            lora={"r": 8, "alpha": 16},
            hyperparameters=TRAINING,
        )
        with server.client(ALICE_KEY) as api:
            response = api.post("/api/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        yield Trained(server, base_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def dashboard(browser: Browser, trained: Trained) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    board = Dashboard(context.new_page(), trained.server.url)
    board.open("/")
    board.page.fill("#api-key", ALICE_KEY)
    board.page.click("#login-submit")
    expect(board.page.locator("#list-view")).to_be_visible()
    try:
        yield board
    finally:
        context.close()


def _fixed(value: float, places: str) -> str:
    # As JavaScript's toFixed rounds: the exact binary value, ties away from zero.
    return str(Decimal(value).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def loss_text(value: float) -> str:
    return _fixed(value, "0.0001")


def change_text(gain: float) -> str:
    """A gain of 0.94 (the loss fell by 94 %) reads "−94 %"; a loss that rose, "+12.5 %"."""
    percent = _fixed(abs(gain * 100), "0.1").removesuffix(".0")
    if percent == "0":
        return "0 %"
    return f"{'−' if gain > 0 else '+'}{percent} %"


# Each change of the job page: (status shown, eval loss before shown or None when hidden).
_RECORD_JOB = """() => {
  window.seen = [];
  const gain = document.getElementById('job-gain');
  new MutationObserver(() => window.seen.push([
    document.getElementById('job-status').textContent,
    gain.hidden ? null : gain.querySelector('.before').textContent,
  ])).observe(document.getElementById('job-view'),
              { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def test_job_page_shows_the_eval_loss_before_while_training_and_the_gain_after(
    dashboard: Dashboard, trained: Trained, tmp_path: Path
) -> None:
    page = dashboard.page
    page.evaluate(_RECORD_JOB)
    # Opened while the job is still starting: the page follows it from there.
    page.evaluate(f"location.hash = '#/jobs/{JOB}'")
    expect(page.locator("#job-name")).to_have_text(JOB)
    expect(page.locator("#job-status")).to_have_text("SUCCEEDED", timeout=240_000)
    job = trained.job()
    before, after, gain = job["eval_loss_before"], job["eval_loss_after"], job["eval_gain"]
    assert before is not None and after is not None and gain is not None, job
    assert gain == round((before - after) / before, 4)

    figures = page.locator("#job-gain")
    expect(figures.locator(".change")).to_have_text(change_text(gain))
    expect(figures.locator(".before")).to_have_text(loss_text(before))
    expect(figures.locator(".after")).to_have_text(loss_text(after))
    expect(figures.locator(".change")).to_have_attribute(
        "data-direction", "better" if gain > 0 else "worse"
    )
    # The starting model's loss was on the page while the job still ran, not only at the end.
    seen = page.evaluate("window.seen")
    assert any(
        shown == loss_text(before) and status not in ("SUCCEEDED", "FAILED", "CANCELLED")
        for status, shown in seen
    ), seen

    targets = job["lora_target_modules"]
    assert targets and "q_proj" in targets
    expect(page.locator("#job-lora")).to_be_visible()
    expect(page.locator("#job-lora-targets")).to_have_text(", ".join(targets))

    # The loss chart starts at step 0: the starting model's evaluation, before any loss.
    with trained.server.client(ALICE_KEY) as api:
        metrics = api.get(f"/api/v1/jobs/{JOB}/metrics").json()["data"]
        log = api.get(f"/api/v1/jobs/{JOB}/logs").text
        raw = api.get(f"/api/v1/jobs/{JOB}/logs", params={"raw": "true"}).text
    evals = [m for m in metrics if m["eval_loss"] is not None]
    assert [m["step"] for m in evals] == [0, 10, 20]
    assert evals[0]["total_steps"] is None and evals[0]["eval_loss"] == before
    chart = page.locator("#loss-chart")
    expect(chart).to_have_attribute("data-eval-points", "3")
    first_x = """line => Number(document.querySelector(`#loss-chart polyline.${line}`)
      .getAttribute('points').split(',')[0])"""
    assert page.evaluate(first_x, "eval") < page.evaluate(first_x, "loss")

    # The log panel shows what /logs shows: the trainer's readable lines, no protocol lines
    # (which the raw log has).
    assert "ainfinity-metric" in raw
    panel = page.locator("#log")
    # The run's last line: the whole log is there once it shows.
    expect(panel).to_contain_text("eval  step 20/20 | eval_loss ")
    shown = (panel.text_content() or "").strip()
    assert shown == log.strip()
    assert "ainfinity-" not in shown
    evaluation = re.compile(r"^eval  step (\d+)(?:/20)? \| eval_loss (\d+\.\d+)$")
    read = [m for m in map(evaluation.match, shown.splitlines()) if m]
    assert [int(m[1]) for m in read] == [0, 10, 20]
    assert [float(m[2]) for m in read] == pytest.approx([m["eval_loss"] for m in evals], abs=5e-5)
    progress = re.compile(
        r"^step (\d+)/20 \| loss \d+\.\d{4} \| lr \S+ \| \d+ tokens/s \| ETA \S+$"
    )
    steps = [int(m[1]) for m in map(progress.match, shown.splitlines()) if m]
    assert steps == [5, 10, 15, 20]

    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    # The job links to its model.
    expect(page.locator("#job-model-link")).to_have_text(f"Model {MODEL} →")
    page.click("#job-model-link")
    expect(page.locator("#model-id")).to_have_text(MODEL)
    dashboard.assert_clean()


def test_model_page_shows_the_eval_loss_before_and_after(
    dashboard: Dashboard, trained: Trained
) -> None:
    trained.job()
    with trained.server.client(ALICE_KEY) as api:
        model = api.get(f"/api/v1/models/{quote(MODEL, safe='')}").json()
    metrics = model["metrics"]
    assert model["base_model"] == str(trained.base_dir)
    page = dashboard.page
    dashboard.open_model(MODEL)
    # The base by the id /v1 serves it under, linked; the lineage has the path the job named.
    expect(page.locator("#model-base a")).to_have_text(BASE)
    expect(page.locator("#model-base a")).to_have_attribute("href", f"#/models/{BASE}")
    expect(page.locator("#lineage-base")).to_have_text(str(trained.base_dir))
    expect(page.locator("#model-eval-loss")).to_have_text(loss_text(metrics["eval_loss"]))
    figures = page.locator("#model-gain")
    expect(figures).to_be_visible()
    expect(figures.locator(".before")).to_have_text(loss_text(metrics["eval_loss_before"]))
    expect(figures.locator(".after")).to_have_text(loss_text(metrics["eval_loss"]))
    expect(figures.locator(".change")).to_have_text(change_text(metrics["eval_gain"]))

    # A base model has no such figures, and nothing to compare with.
    page.click("#model-base a")
    expect(page.locator("#model-method")).to_have_text("base")
    expect(figures).to_be_hidden()
    expect(page.locator("#chat-compare-label")).to_be_hidden()
    dashboard.assert_clean()


_CALL = """async ([url, name, values]) => {
  const module = await import(url);
  return values.map((value) => module[name](value));
}"""


def test_base_ids_and_loss_changes_read_as_documented(dashboard: Dashboard) -> None:
    page = dashboard.page
    script = page.locator('script[type="module"]').get_attribute("src") or ""
    bases = {
        "tiny-random-llama": "tiny-random-llama",
        "ft:tiny-random-llama:a": "ft:tiny-random-llama:a",
        "HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",  # a hub id
        "/srv/models/house-llama": "house-llama",
        "/srv/models/house-llama/": "house-llama",
        "./models/house-llama": "house-llama",
        "~/models/house-llama": "house-llama",
    }
    api_module = script.replace("app.js", "api.js")
    assert page.evaluate(_CALL, [api_module, "baseModelId", list(bases)]) == list(bases.values())
    changes = {0.94: "−94 %", 0.0647: "−6.5 %", -0.125: "+12.5 %", 0.0004: "0 %", 0: "0 %"}
    format_module = script.replace("app.js", "format.js")
    shown = page.evaluate(_CALL, [format_module, "formatLossChange", list(changes)])
    assert shown == list(changes.values())
    # The tests' own reading agrees (it checks the pages' figures above).
    assert [change_text(gain) for gain in changes] == shown


class ChatRequests:
    """The page's chat requests: their bodies, and the order they began and ended in."""

    def __init__(self, page: Page) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.order: list[str] = []
        page.on("request", lambda request: self._seen(request, "sent"))
        page.on("requestfinished", lambda request: self._seen(request, "finished"))

    def _seen(self, request: Request, what: str) -> None:
        if not request.url.endswith(CHAT_PATH):
            return
        if what == "sent":
            self.bodies.append(json.loads(request.post_data or "{}"))
        self.order.append(what)


def compare(page: Page, prompt: str) -> None:
    page.fill("#chat-input", prompt)
    page.press("#chat-input", "Enter")


def test_compare_mode_streams_the_base_and_the_fine_tuned_answers_side_by_side(
    dashboard: Dashboard, trained: Trained, tmp_path: Path
) -> None:
    trained.job()
    # The API's answers first: this also loads both models one after the other, as a worker
    # that loads two models at once can fail one of them (transformers' lazy import is not
    # thread-safe).
    base_answer, tuned_answer = trained.greedy(BASE), trained.greedy(MODEL)
    assert tuned_answer.strip(), "the fine-tuned model answered nothing; the test proves little"
    assert base_answer != tuned_answer, "the same answers could not tell the columns apart"
    page = dashboard.page
    dashboard.open_model(MODEL)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", str(TOKENS))
    page.check("#chat-compare")
    expect(page.locator("#compare-empty")).to_be_visible()
    expect(page.locator("#compare-base")).to_have_text(BASE)
    requests = ChatRequests(page)

    compare(page, PROMPT)
    row = page.locator("#chat-log li.compare").last
    base, tuned = row.locator('[data-side="base"]'), row.locator('[data-side="tuned"]')
    expect(base).to_have_attribute("data-state", "done", timeout=60_000)
    expect(tuned).to_have_attribute("data-state", "done", timeout=60_000)
    # Both asked at once, each with the prompt alone; neither waited for the other to end.
    options = {"max_tokens": TOKENS, "temperature": 0, "stream": True}
    question = [{"role": "user", "content": PROMPT}]
    assert sorted(requests.bodies, key=lambda body: body["model"]) == [
        {"model": MODEL, "messages": question, **options},
        {"model": BASE, "messages": question, **options},
    ]
    assert requests.order[:2] == ["sent", "sent"], requests.order
    assert base.locator(".bubble").text_content() == base_answer
    assert tuned.locator(".bubble").text_content() == tuned_answer
    expect(base.locator(".who")).to_have_text(f"base · {BASE}")
    expect(tuned.locator(".who")).to_have_text("fine-tuned · final")
    for side in (base, tuned):
        assert int(side.get_attribute("data-chunks") or 0) > 1  # streamed, piece by piece

    # A checkpoint against the base: the next prompt goes to the one picked.
    second = "And 3 plus 5?"
    base_answer, checkpoint_answer = (
        trained.greedy(BASE, second),
        trained.greedy(CHECKPOINT, second),
    )
    page.select_option("#chat-model", CHECKPOINT)
    requests.bodies.clear()
    compare(page, second)
    expect(page.locator("#chat-log li.compare")).to_have_count(2)
    expect(tuned).to_have_attribute("data-state", "done", timeout=60_000)
    expect(base).to_have_attribute("data-state", "done", timeout=60_000)
    assert {body["model"] for body in requests.bodies} == {BASE, CHECKPOINT}
    assert tuned.locator(".bubble").text_content() == checkpoint_answer
    assert base.locator(".bubble").text_content() == base_answer
    expect(tuned.locator(".who")).to_have_text("fine-tuned · step 10")

    page.locator("#chat-input").blur()
    screenshot = tmp_path / "models.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("AINFINITY_SAVE_SCREENSHOTS") == "1":
        SCREENSHOT_FOR_DOCS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT_FOR_DOCS)

    # Back to a conversation: it starts afresh and carries on as before.
    page.uncheck("#chat-compare")
    expect(page.locator("#chat-log li")).to_have_count(0)
    expect(page.locator("#chat-empty")).to_be_visible()
    dashboard.assert_clean()


def test_compare_mode_shows_a_base_model_that_is_not_served_in_its_column(
    dashboard: Dashboard, trained: Trained
) -> None:
    trained.job()
    # Asked (and so loaded) before its base directory goes away.
    tuned_answer = trained.greedy(MODEL)
    moved = trained.base_dir.with_name("moved-away")
    shutil.move(trained.base_dir, moved)
    try:
        page = dashboard.page
        dashboard.open_model(MODEL)
        page.fill("#chat-temperature", "0")
        page.fill("#chat-max-tokens", str(TOKENS))
        page.check("#chat-compare")
        compare(page, PROMPT)
        base = page.locator('#chat-log li.compare [data-side="base"]')
        tuned = page.locator('#chat-log li.compare [data-side="tuned"]')
        expect(base).to_have_attribute("data-state", "unavailable", timeout=60_000)
        expect(base.locator(".error")).to_have_text(
            f"The base model {BASE} is not served here: The model '{BASE}' does not exist."
        )
        expect(tuned).to_have_attribute("data-state", "done", timeout=60_000)
        assert tuned.locator(".bubble").text_content() == tuned_answer
        # The prompt is not given back: one side answered.
        expect(page.locator("#chat-input")).to_have_value("")
    finally:
        shutil.move(moved, trained.base_dir)
    # The browser reports the 404 it was answered as a failed load.
    dashboard.watch.problems = [p for p in dashboard.watch.problems if "status of 404" not in p]
    dashboard.assert_clean()
