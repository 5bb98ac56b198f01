"""The dashboard's Models pages in headless Chromium against the shared server with real
fine-tuned models: the list (page by page), a model's lineage and loss curve with links to
and from its job, and the chat box streaming real answers (compared with the official SDK's
greedy ones) while it keeps the conversation.

Debian's chromium is used as it is, as in tests/test_dashboard.py."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.serving.conftest import ALICE_KEY, SAMPLE_CHAT, TRAINING, Served
from tests.test_dashboard import CHROMIUM, PageWatch

pytestmark = pytest.mark.timeout(300)

FULL = "ft:tiny-random-llama:full-a"
LORA = "ft:tiny-random-llama:lora-a"
CHAT_PATH = "/v1/chat/completions"


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


class Dashboard:
    """A tab signed in as alice, and what it asked for."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.watch = PageWatch(page)

    def open(self, fragment: str) -> None:
        self.page.goto(f"{self.origin}/dashboard#{fragment}")

    def open_model(self, model_id: str) -> None:
        self.open("/models/" + quote(model_id, safe=""))
        expect(self.page.locator("#model-chat")).to_be_visible()

    def assert_clean(self) -> None:
        assert self.watch.off_origin(self.origin) == []
        assert not any(ALICE_KEY in url for url in self.watch.urls)
        assert self.watch.problems == []


@pytest.fixture
def dashboard(browser: Browser, served: Served) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    board = Dashboard(page, served.server.url)
    board.open("/")
    page.fill("#api-key", ALICE_KEY)
    page.click("#login-submit")
    expect(page.locator("#list-view")).to_be_visible()
    try:
        yield board
    finally:
        context.close()


def greedy(served: Served, model: str, messages: list[dict[str, str]], tokens: int) -> str:
    answer = served.sdk().chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=tokens,
    )
    return answer.choices[0].message.content or ""


def test_models_page_lists_every_model_page_by_page(dashboard: Dashboard, served: Served) -> None:
    page = dashboard.page
    with served.api(ALICE_KEY) as api:
        expected = api.get("/api/v1/models?limit=100").json()["data"]
    assert len(expected) >= 4

    # A page of one model, so that following `next_cursor` is what shows them all.
    def one_per_page(route: Route) -> None:
        route.continue_(url=route.request.url.replace("limit=50", "limit=1"))

    page.route(lambda url: "/api/v1/models?" in url, one_per_page)
    page.click("#nav-models")
    expect(page.locator("#models-view")).to_be_visible()
    expect(page.locator("#nav-models")).to_have_attribute("aria-current", "page")
    rows = page.locator("#models-body tr")
    for shown in range(1, len(expected)):
        expect(rows).to_have_count(shown)
        page.click("#models-more")
    expect(rows).to_have_count(len(expected))
    expect(page.locator("#models-more")).to_be_hidden()
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.model)") == [
        model["id"] for model in expected
    ]
    # One request a page, each after the cursor the last one gave.
    pages = [url for url in dashboard.watch.urls if "/api/v1/models?" in url]
    assert len(pages) == len(expected)
    assert ["after=" in url for url in pages] == [False] + [True] * (len(expected) - 1)

    full = next(model for model in expected if model["id"] == FULL)
    row = page.locator(f'tr[data-model="{FULL}"]')
    expect(row.locator(".method .badge")).to_have_text("full")
    expect(row.locator(".job a")).to_have_attribute("href", "#/jobs/full-a")
    expect(row.locator(".train-loss")).to_have_text(f"{full['metrics']['train_loss']:.4f}")
    expect(row.locator(".size")).to_have_text(f"{full['size_bytes'] / 1000:.1f} KB")
    expect(page.locator('tr[data-model="tiny-random-llama"] .method .badge')).to_have_text("base")

    row.locator(".name a").click()
    expect(page.locator("#model-view")).to_be_visible()
    expect(page.locator("#model-id")).to_have_text(FULL)
    dashboard.assert_clean()


def test_model_page_shows_its_lineage_loss_curve_and_job(
    dashboard: Dashboard, served: Served
) -> None:
    page = dashboard.page
    with served.api(ALICE_KEY) as api:
        metrics = api.get("/api/v1/jobs/full-a/metrics").json()["data"]
    dashboard.open_model(FULL)
    expect(page.locator("#model-method")).to_have_text("full")
    expect(page.locator("#model-base")).to_have_text("tiny-random-llama")
    expect(page.locator("#model-owner")).to_have_text("alice")
    expect(page.locator("#model-path")).to_have_text(served.full["output_dir"])
    expect(page.locator("#model-checkpoint-count")).to_have_text("3")
    expect(page.locator("#lineage-dataset")).to_have_text(str(SAMPLE_CHAT))
    sha = hashlib.sha256(SAMPLE_CHAT.read_bytes()).hexdigest()
    expect(page.locator("#lineage-dataset-sha")).to_have_text(sha)
    params = page.locator("#lineage-hyperparameters div").evaluate_all(
        "pairs => Object.fromEntries(pairs.map(p => [p.children[0].textContent, "
        "p.children[1].textContent]))"
    )
    assert params["max_steps"] == str(TRAINING["max_steps"])
    assert params["learning_rate"] == "0.003" and params["lr_scheduler_type"] == "linear"
    expect(page.locator("#lineage-lora-block")).to_be_hidden()

    # The job's loss curve: every logged loss, one line.
    losses = [m for m in metrics if m["loss"] is not None]
    chart = page.locator("#model-loss-chart")
    expect(chart).to_have_attribute("data-points", str(len(losses)))
    expect(chart.locator("polyline.loss")).to_have_count(1)
    drawn = chart.locator("polyline.loss").get_attribute("points") or ""
    assert len(drawn.split()) == len(losses)

    options = page.locator("#chat-model option")
    assert options.evaluate_all("os => os.map(o => [o.value, o.textContent])") == [
        [FULL, "final"],
        *[[f"{FULL}:ckpt-{step}", f"step {step}"] for step in (10, 20, 30)],
    ]

    # To the job and back: a SUCCEEDED job links to its model.
    page.click("#model-job a")
    expect(page.locator("#job-name")).to_have_text("full-a")
    link = page.locator("#job-model-link")
    expect(link).to_have_text(f"Model {FULL} →")
    link.click()
    expect(page.locator("#model-id")).to_have_text(FULL)
    expect(chart).to_have_attribute("data-points", str(len(losses)))

    dashboard.open_model(LORA)
    expect(page.locator("#model-method")).to_have_text("lora")
    expect(page.locator("#lineage-lora-block")).to_be_visible()
    expect(page.locator("#lineage-lora div").filter(has_text="alpha")).to_contain_text("16")
    expect(page.locator("#chat-model option")).to_have_count(4)

    # A base model: nothing trained it, and it can be talked to all the same.
    dashboard.open_model("house-llama")
    expect(page.locator("#model-method")).to_have_text("base")
    expect(page.locator("#model-job")).to_have_text("—")
    expect(page.locator("#model-training")).to_be_hidden()
    expect(page.locator("#model-chat")).to_be_visible()
    expect(page.locator("#chat-checkpoint-label")).to_be_hidden()

    dashboard.open("/models/" + quote("ft:tiny-random-llama:no-such-job", safe=""))
    expect(page.locator("#model-message")).to_have_text(
        "No model named ft:tiny-random-llama:no-such-job."
    )
    expect(page.locator("#model-chat")).to_be_hidden()
    # The browser reports the 404 it was answered as a failed load.
    dashboard.watch.problems = [p for p in dashboard.watch.problems if "status of 404" not in p]
    dashboard.assert_clean()


# Each change of the answer while it streams: (state, length of the text shown).
_RECORD = """() => {
  window.shown = [];
  const log = document.getElementById('chat-log');
  new MutationObserver(() => {
    const turn = log.querySelector('.turn.assistant:last-child');
    const bubble = turn && turn.querySelector('.bubble');
    if (turn) window.shown.push([turn.dataset.state, bubble.textContent.length]);
  }).observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def ask(page: Page, question: str, *, press_enter: bool) -> dict[str, Any]:
    """Send a question from the chat box; the request body the page sent."""
    with page.expect_request(lambda r: r.url.endswith(CHAT_PATH)) as sent:
        page.fill("#chat-input", question)
        if press_enter:
            page.press("#chat-input", "Enter")
        else:
            page.click("#chat-send")
    return json.loads(sent.value.post_data or "{}")  # type: ignore[no-any-return]


def test_chat_box_streams_answers_and_keeps_the_conversation(
    dashboard: Dashboard, served: Served, tmp_path: Path
) -> None:
    page = dashboard.page
    dashboard.open_model(FULL)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "24")
    page.evaluate(_RECORD)
    first_question = {"role": "user", "content": "What is 2 plus 2?"}

    body = ask(page, first_question["content"], press_enter=True)

    assert body == {
        "model": FULL,
        "messages": [first_question],
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
    }
    answers = page.locator(".turn.assistant")
    expect(answers.first).to_have_attribute("data-state", "done", timeout=60_000)
    first = greedy(served, FULL, [first_question], 24)
    assert first.strip(), "the model answered nothing; the test would prove little"
    assert answers.first.locator(".bubble").text_content() == first
    # Shown piece by piece as the chunks came, not all at the end.
    shown = page.evaluate("window.shown")
    assert any(state == "streaming" and 0 < length < len(first) for state, length in shown)
    assert int(answers.first.get_attribute("data-chunks") or 0) > 1
    expect(page.locator("#chat-send")).to_be_enabled()

    # The next turn goes to a checkpoint, with the conversation so far.
    checkpoint = f"{FULL}:ckpt-10"
    page.select_option("#chat-model", checkpoint)
    second_question = {"role": "user", "content": "And 3 plus 5?"}
    body = ask(page, second_question["content"], press_enter=False)
    history = [first_question, {"role": "assistant", "content": first}, second_question]
    assert body["model"] == checkpoint and body["messages"] == history
    expect(answers.nth(1)).to_have_attribute("data-state", "done", timeout=60_000)
    assert answers.nth(1).locator(".bubble").text_content() == greedy(
        served, checkpoint, history, 24
    )
    expect(answers.nth(1).locator(".who")).to_have_text("step 10")
    expect(page.locator(".turn.user .bubble")).to_have_text(
        [first_question["content"], second_question["content"]]
    )

    # (docs/img/models.png shows compare mode: test_dashboard_gains.py takes it.)
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)

    # A new chat starts from nothing.
    page.click("#chat-clear")
    expect(page.locator("#chat-log li")).to_have_count(0)
    page.select_option("#chat-model", FULL)
    assert ask(page, "Hello?", press_enter=True)["messages"] == [
        {"role": "user", "content": "Hello?"}
    ]
    expect(answers.first).to_have_attribute("data-state", "done", timeout=60_000)
    dashboard.assert_clean()


def _failing_stream(route: Route) -> None:
    # What the gateway sends when the worker dies mid-answer: the status was 200 already.
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"error": {"message": "The inference worker stopped.", "type": "server_error",
                   "param": None, "code": "worker_unavailable"}},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks)
    route.fulfill(status=200, content_type="text/event-stream", body=body)


_STREAM_CHAT = """async ([url, model]) => {
  const { streamChat } = await import(url);
  try {
    await streamChat({ model, messages: [{ role: "user", content: "hi" }], onDelta: () => {} });
    return null;
  } catch (error) {
    return { status: error.status, code: error.code, message: error.message };
  }
}"""

_READ = """async ([url, parts]) => {
  const { readChatStream } = await import(url);
  const encoder = new TextEncoder();
  const body = new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(encoder.encode(part));
      controller.close();
    },
  });
  const pieces = [];
  try {
    const { finishReason } = await readChatStream(body, (piece) => pieces.push(piece));
    return { pieces, finishReason };
  } catch (error) {
    return { pieces, code: error.code, message: error.message };
  }
}"""


def test_a_failed_answer_shows_its_error_and_leaves_the_conversation(
    dashboard: Dashboard, served: Served
) -> None:
    page = dashboard.page
    dashboard.open_model(FULL)
    page.route(lambda url: url.endswith(CHAT_PATH), _failing_stream)
    ask(page, "What is 2 plus 2?", press_enter=True)
    failed = page.locator(".turn.assistant").first
    expect(failed).to_have_attribute("data-state", "error")
    expect(failed.locator(".bubble")).to_have_text("Hel")
    expect(failed.locator(".error")).to_have_text(
        "worker_unavailable: The inference worker stopped."
    )
    # The question comes back to send again, and the failed turn is not sent with it.
    expect(page.locator("#chat-input")).to_have_value("What is 2 plus 2?")
    page.unroute_all()
    body = ask(page, "Hello?", press_enter=True)
    assert body["messages"] == [{"role": "user", "content": "Hello?"}]
    expect(page.locator(".turn.assistant").nth(1)).to_have_attribute(
        "data-state", "done", timeout=60_000
    )

    # The module itself, against the real server and on streams made here.
    script = page.locator('script[type="module"]').get_attribute("src") or ""
    module = script.replace("app.js", "chat_stream.js")
    unknown = page.evaluate(_STREAM_CHAT, [module, "ft:tiny-random-llama:no-such-job"])
    assert unknown == {
        "status": 404,
        "code": "model_not_found",
        "message": "The model 'ft:tiny-random-llama:no-such-job' does not exist.",
    }
    dashboard.watch.problems = [p for p in dashboard.watch.problems if "status of 404" not in p]
    role = 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    whole = page.evaluate(
        _READ,
        [
            module,
            [
                role + 'data: {"choices":[{"delta":{"content":"Hel"}}]}\n',
                '\ndata: {"choices":[{"delta":{"con',  # a chunk split mid-line
                'tent":"lo"},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n',
            ],
        ],
    )
    assert whole == {"pieces": ["Hel", "lo"], "finishReason": "length"}
    cut = page.evaluate(
        _READ, [module, [role + 'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n']]
    )
    assert cut["pieces"] == ["Hel"] and cut["code"] == "incomplete_stream"
    dashboard.assert_clean()
