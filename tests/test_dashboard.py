"""The web dashboard and the offline Swagger UI, driven in headless Chromium against a real
uvicorn serving a job that really trains.

Debian's chromium is used as it is (Playwright never downloads a browser): without it the
browser tests skip locally and fail under CI, which installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from ainfinity.api.dashboard import DASHBOARD_DIR
from tests.builders import API_KEY, ROOT, job_body
from tests.servers import UvicornServer
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_FOR_DOCS = ROOT / "docs" / "img" / "dashboard.png"


# -- the pages' HTTP contract (no browser) ---------------------------------------------------


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/dashboard/assets/[^"]+)"', html)


def test_dashboard_page_needs_no_key_and_sends_a_strict_policy(client: TestClient) -> None:
    response = client.get("/dashboard", headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    # Nothing from anywhere else, nothing inline.
    assert "http://" not in response.text and "https://" not in response.text
    assert "<style" not in response.text and " style=" not in response.text
    assert re.search(r"<script(?![^>]*\bsrc=)", response.text) is None
    # Both API roots are filled in: /api/v1, and /v1 for the chat box.
    assert '<meta name="ainfinity-api" content="/api/v1">' in response.text
    assert '<meta name="ainfinity-openai" content="/v1">' in response.text
    assert "{{" not in response.text


def test_dashboard_assets_are_cached_for_good_under_a_content_digest(client: TestClient) -> None:
    html = client.get("/dashboard").text
    urls = asset_urls(html)
    assert {url.rsplit("/", 1)[1] for url in urls} >= {"app.js", "style.css", "favicon.svg"}
    (digest,) = {url.split("/")[3] for url in urls}
    for url in urls:
        response = client.get(url, headers={"X-API-Key": ""})
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        again = client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    script = client.get(f"/dashboard/assets/{digest}/app.js")
    media_type = script.headers["content-type"].split(";")[0]
    assert media_type in ("text/javascript", "application/javascript")
    # Every module the scripts import is served too (a typo would only show in a browser).
    for path in sorted((DASHBOARD_DIR / "assets").glob("*.js")):
        for module in re.findall(r'from "\./([^"]+)"', path.read_text()):
            assert client.get(f"/dashboard/assets/{digest}/{module}").status_code == 200, module
    assert client.get("/dashboard/assets/000000000000/app.js").status_code == 404
    assert client.get(f"/dashboard/assets/{digest}/../index.html").status_code == 404


def test_swagger_and_redoc_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    for url in ("/docs", "/redoc"):
        response = client.get(url, headers={"X-API-Key": ""})
        assert response.status_code == 200, url
        assert "cdn." not in response.text and "https://" not in response.text, url
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        for asset in re.findall(r'(?:src|href)="([^"]+)"', response.text):
            served = client.get(asset)
            assert served.status_code == 200, asset
            assert "immutable" in served.headers["cache-control"]
    swagger = client.get("/docs")
    # The one inline script (SwaggerUIBundle's set-up) is allowed by its hash, nothing else.
    assert "'sha256-" in swagger.headers["content-security-policy"]
    assert "unsafe-inline" not in swagger.headers["content-security-policy"]
    assert '"validatorUrl": null' in swagger.text


# -- in the browser --------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    home = tmp_path_factory.mktemp("dashboard") / "home"
    env = {"AINFINITY_LOCAL_MAX_JOBS": "1", "AINFINITY_RECONCILE_INTERVAL_SECONDS": "0.3"}
    with UvicornServer(home, env=env) as running:
        yield running


class PageWatch:
    """Everything a page asked for and complained about, to assert on afterwards."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.failed: dict[str, str | None] = {}
        self.problems: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("requestfailed", lambda request: self.failed.update({request.url: request.failure}))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # CSP violations and uncaught failures land here as errors; so does each 401 the
        # tests provoke on purpose (a wrong key, a call before authorizing).
        if message.type == "error" and "status of 401" not in message.text:
            self.problems.append(f"console: {message.text}")

    def off_origin(self, origin: str) -> list[str]:
        # A blob: URL of this origin is made in the page itself (ReDoc's search worker).
        return [url for url in self.urls if not url.startswith((origin + "/", f"blob:{origin}/"))]


def points(page: Page, attribute: str = "points") -> int:
    return int(page.get_attribute("#loss-chart", f"data-{attribute}") or 0)


def watched_job(name: str) -> dict[str, Any]:
    # Long enough to watch at ~10-40 ms a step on two busy cores; cancelled long before.
    return job_body(
        name=name,
        dataset=str(ROOT / "samples" / "tiny_chat.jsonl"),
        validation_dataset=str(ROOT / "samples" / "tiny_chat_val.jsonl"),
        hyperparameters={
            "max_steps": 4000,
            "batch_size": 4,
            "learning_rate": 2e-3,
            "max_seq_length": 128,
            "logging_steps": 5,
            "eval_steps": 60,
            "save_steps": None,
        },
    )


def test_dashboard_follows_a_training_job_live_and_cancels_it(
    browser: Browser, server: UvicornServer, tmp_path: Path
) -> None:
    with server.client() as api, TcpProxy(server.port or 0) as proxy:
        assert api.post("/api/v1/jobs", json=watched_job("watched")).status_code == 202
        try:
            _drive_dashboard(browser, proxy, api, tmp_path)
        finally:
            # A failed test must not leave a job training for minutes.
            for name in ("queued", "watched"):
                api.post(f"/api/v1/jobs/{name}/cancel")


def _drive_dashboard(browser: Browser, proxy: TcpProxy, api: httpx.Client, tmp_path: Path) -> None:
    # The browser reaches the server through a proxy the test can cut.
    origin = proxy.url
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(f"{origin}/dashboard")

    # A wrong key is refused at the form and not kept.
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#api-key", "not-the-key-0123456789")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("That key was not accepted.")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#api-key", API_KEY)
    page.click("#login-submit")
    expect(page.locator("#list-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('ainfinity.apiKey')") == API_KEY

    # The list was read once; from here on only the stream moves its progress bar.
    row = page.locator('tr[data-job="watched"]')
    expect(row.locator(".status .badge")).to_have_text("RUNNING", timeout=60_000)
    expect(page.locator("#stream-state")).to_have_attribute("data-state", "live")
    page.wait_for_function(
        "() => Number(document.querySelector('tr[data-job=watched] progress').value) > 0",
        timeout=60_000,
    )
    first = float(row.locator("progress").get_attribute("value") or 0)
    page.wait_for_function(
        "v => Number(document.querySelector('tr[data-job=watched] progress').value) > v",
        arg=first,
        timeout=30_000,
    )
    expect(row.locator(".loss")).to_have_text(re.compile(r"^\d+\.\d{4}$"))
    expect(row.locator(".eta")).to_have_text(re.compile(r"^\d+(m \d\ds|s)$"))

    # A job made elsewhere shows up on top, and its cancellation, without a reload.
    assert api.post("/api/v1/jobs", json=job_body(name="queued")).status_code == 202
    newest = page.locator("#jobs-body tr").first
    expect(newest).to_have_attribute("data-job", "queued")
    expect(newest.locator(".badge")).to_have_text("PENDING")
    assert api.post("/api/v1/jobs/queued/cancel").status_code == 202
    expect(newest.locator(".badge")).to_have_text("CANCELLED")

    row.locator("a").click()
    expect(page.locator("#job-view")).to_be_visible()
    expect(page.locator("#job-name")).to_have_text("watched")
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart').dataset.points) >= 3", timeout=30_000
    )
    seen = points(page)
    # Live `metric` events, not a reload, add points to the curve.
    page.wait_for_function(
        "n => Number(document.querySelector('#loss-chart').dataset.points) >= n",
        arg=seen + 10,
        timeout=30_000,
    )
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart').dataset.evalPoints) >= 2",
        timeout=60_000,
    )

    # The network drops: the page reconnects by itself, resuming after the last message it
    # got, and the curve goes on growing.
    before = points(page)
    with page.expect_request(
        lambda request: request.url.endswith("/jobs/watched/events/stream"), timeout=20_000
    ) as reconnect:
        assert proxy.drop() >= 1
    assert int(reconnect.value.headers.get("last-event-id", "0")) > 0
    # Chromium reports each stream the drop cut (events, log) as a failed load.
    watch.problems = [p for p in watch.problems if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in p]
    expect(page.locator("#stream-state")).to_have_attribute("data-state", "live", timeout=20_000)
    page.wait_for_function(
        "n => Number(document.querySelector('#loss-chart').dataset.points) >= n",
        arg=before + 5,
        timeout=30_000,
    )
    assert page.locator("#loss-chart polyline.loss").count() == 1
    assert page.locator("#loss-chart .marks.eval circle").count() == points(page, "eval-points")
    statuses = page.locator("#events li").evaluate_all("items => items.map(i => i.dataset.status)")
    assert statuses == ["PENDING", "STARTING", "RUNNING"]
    # The trainer's readable progress lines; /logs leaves its protocol lines out.
    expect(page.locator("#log")).to_contain_text(
        re.compile(r"step \d+/4000 \| loss \d+\.\d{4} \| lr "), timeout=15_000
    )
    assert "ainfinity-" not in (page.text_content("#log") or "")
    # The log tail moves on by itself as the run writes.
    page.wait_for_function(
        "text => document.querySelector('#log').textContent !== text",
        arg=page.text_content("#log"),
        timeout=15_000,
    )
    expect(page.locator("#stat-step")).to_have_text(re.compile(r"^\d+ / 4000$"))

    running = tmp_path / "dashboard-running.png"
    page.screenshot(path=str(running), full_page=True)
    if os.environ.get("AINFINITY_SAVE_SCREENSHOTS") == "1":
        SCREENSHOT_FOR_DOCS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(running, SCREENSHOT_FOR_DOCS)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-button")
    expect(page.locator("#job-message")).to_contain_text("Cancel requested")
    expect(page.locator("#job-status")).to_have_text("CANCELLED", timeout=60_000)
    expect(page.locator("#cancel-button")).to_be_hidden()
    timeline = page.locator("#events li")
    expect(timeline.last).to_have_attribute("data-status", "CANCELLED")
    expect(page.locator('#events li[data-type="cancel_requested"] .actor')).to_have_text("tester")
    assert api.get("/api/v1/jobs/watched").json()["status"] == "CANCELLED"
    # The log tail followed the run to its very last line, across the drop.
    last_line = api.get("/api/v1/jobs/watched/logs", params={"tail": 1}).text.strip()
    assert last_line
    expect(page.locator("#log")).to_contain_text(last_line, timeout=15_000)
    page.screenshot(path=str(tmp_path / "dashboard-cancelled.png"), full_page=True)

    assert watch.off_origin(origin) == []
    assert not any(API_KEY in url for url in watch.urls)
    assert any("/events/stream" in url for url in watch.urls)
    assert watch.problems == []
    context.close()


_PARSE = """async ([url, chunks]) => {
  const { SseParser } = await import(url);
  const messages = [];
  const parser = new SseParser((message) => messages.push(message));
  for (const chunk of chunks) parser.push(chunk);
  return { messages, lastEventId: parser.lastEventId, retry: parser.retry };
}"""


def test_the_pages_sse_parser_frames_messages_as_the_spec_says(
    browser: Browser, server: UvicornServer
) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/dashboard")
    (script,) = [url for url in asset_urls(page.content()) if url.endswith("/app.js")]
    chunks = [
        ": ping\n\n",  # a comment: no message
        'id: 1\nevent: status\ndata: {"job":"a"}\n\n',
        "id: 2\r",  # CRLF split across chunks, data over two lines
        "\nevent: metric\r\ndata: x\r\n",
        "data: y\r\n\r\n",
        "id: 7\n\n",  # a bare id moves the resume point, dispatches nothing
        "retry: 5000\ndata:no-space\n",
        "\n",
        "id: 8\ndata: unfinished",  # no blank line yet: not a message
    ]
    result = page.evaluate(_PARSE, [script.replace("app.js", "sse.js"), chunks])
    assert result["messages"] == [
        {"id": "1", "event": "status", "data": '{"job":"a"}'},
        {"id": "2", "event": "metric", "data": "x\ny"},
        {"id": "7", "event": "message", "data": "no-space"},
    ]
    assert result["lastEventId"] == "7"
    assert result["retry"] == 5000
    page.close()


def test_swagger_ui_works_offline_with_the_api_key(browser: Browser, server: UvicornServer) -> None:
    origin = server.url
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(f"{origin}/docs")
    operation = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/api/v1/jobs"]')
    )
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()

    def execute() -> str:
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table .response .response-col_status")
        expect(status).to_have_text(re.compile(r"^\d{3}"), timeout=15_000)
        text = status.inner_text().strip()[:3]
        operation.locator("button.btn-clear").click()
        return text

    assert execute() == "401"

    page.click(".auth-wrapper button.authorize")
    scheme = page.locator(".auth-container").filter(has_text="ApiKeyHeader")
    scheme.locator("input").fill(API_KEY)
    scheme.locator("button.authorize").click()
    expect(scheme.locator("button", has_text="Logout")).to_be_visible()
    page.click("button.close-modal")

    assert execute() == "200"
    assert watch.off_origin(origin) == []
    assert watch.problems == []

    # ReDoc, served from the same package, renders the API too. Its bundle always asks for
    # Redocly's logo from their CDN: the page's policy blocks that before it leaves.
    page.goto(f"{origin}/redoc")
    expect(page.locator("h1").first).to_contain_text("ainfinity", timeout=30_000)
    expect(page.get_by_text("/api/v1/jobs").first).to_be_attached()
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert set(watch.off_origin(origin)) <= {logo}
    if logo in watch.urls:
        assert watch.failed.get(logo) == "csp"
    context.close()
