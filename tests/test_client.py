"""`ainfinity.client`: the sync and async clients against a real uvicorn server, typed
results and typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ainfinity.api.main import create_app
from ainfinity.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    NotFound,
    RateLimited,
    ServerError,
    StreamFailed,
    Unauthorized,
    ValidationFailed,
)
from ainfinity.client.errors import error_from_response
from ainfinity.client.streams import ChatStream
from ainfinity.core.config import Settings
from ainfinity.schema.activity import EventType
from ainfinity.schema.job import Job, JobCreate, JobStatus
from ainfinity.schema.training_options import Hyperparameters
from tests.builders import API_KEY, SAMPLE_SFT, job_body
from tests.conftest import MakeSettings
from tests.servers import UvicornServer, free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    # Jobs stay PENDING (AINFINITY_LOCAL_MAX_JOBS=0): these tests need no training.
    with UvicornServer(tmp_path_factory.mktemp("client") / "home") as running:
        yield running


@pytest.fixture
def client(server: UvicornServer) -> Iterator[Client]:
    with Client(server.url, API_KEY) as api:
        yield api


def test_sync_client_drives_a_job_with_typed_results(client: Client) -> None:
    spec = JobCreate(
        name="sync-one",
        model="tiny-random-llama",
        dataset=str(SAMPLE_SFT),
        hyperparameters=Hyperparameters(max_steps=8, learning_rate=2e-3, max_seq_length=128),
    )
    job = client.create_job(spec)
    assert isinstance(job, Job)
    assert (job.name, job.status, job.spec.hyperparameters.max_steps) == (
        "sync-one",
        JobStatus.PENDING,
        8,
    )
    assert job.spec.executor == "local"  # the server's default
    assert client.get_job("sync-one").created_at == job.created_at

    events = client.events("sync-one")
    assert [(e.type, e.status) for e in events] == [(EventType.CREATED, JobStatus.PENDING)]
    assert "run:" in client.task("sync-one")
    assert client.metrics("sync-one") == []
    assert client.checkpoints("sync-one") == []
    assert client.logs("sync-one") == ""

    cancelled = client.cancel_job("sync-one")
    assert cancelled.status == JobStatus.CANCELLED
    client.delete_job("sync-one")
    with pytest.raises(NotFound) as caught:
        client.get_job("sync-one")
    assert (caught.value.status_code, caught.value.code) == (404, "job_not_found")
    assert "sync-one" in caught.value.msg
    assert client.health() == {"status": "ok"}


def test_list_jobs_walks_every_page_newest_first(client: Client) -> None:
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        client.create_job(job_body(name=name))
    first = client.list_page(status="PENDING", limit=2)
    assert len(first.data) == 2 and first.has_more and first.next_cursor
    listed = [job.name for job in client.list_jobs(status=JobStatus.PENDING, page_size=2)]
    assert [name for name in listed if name.startswith("page-")] == names[::-1]
    for name in names:
        client.cancel_job(name)
    assert not [job for job in client.list_jobs(status="PENDING") if job.name in names]


def test_errors_are_typed(client: Client, server: UvicornServer) -> None:
    client.create_job(job_body(name="taken"))
    with pytest.raises(Conflict) as conflict:
        client.create_job(job_body(name="taken"))
    assert (conflict.value.status_code, conflict.value.code) == (409, "job_exists")

    bad = job_body(hyperparameters={"learning_rate": 5})
    with pytest.raises(ValidationFailed) as invalid:
        client.create_job(bad)
    assert invalid.value.code == "validation_error"
    assert invalid.value.errors is not None
    assert ["body", "hyperparameters", "learning_rate"] in [e["loc"] for e in invalid.value.errors]

    client.cancel_job("taken")
    with pytest.raises(Conflict) as finished:
        client.cancel_job("taken")
    assert finished.value.code == "job_finished"

    with Client(server.url, "not-a-key-0123456789") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            stranger.list_page()
    assert (unauthorized.value.status_code, unauthorized.value.code) == (401, "unauthorized")

    with Client(f"http://127.0.0.1:{free_port()}", API_KEY) as nowhere:
        with pytest.raises(ConnectionFailed) as unreachable:
            nowhere.health()
    assert unreachable.value.code == "connection_failed"
    assert "127.0.0.1" in unreachable.value.msg


def test_idempotency_key_makes_one_job(client: Client) -> None:
    first = client.create_job(job_body(), idempotency_key="client-retry-1")
    again = client.create_job(job_body(), idempotency_key="client-retry-1")
    assert again.name == first.name
    client.cancel_job(first.name)


def test_url_and_key_come_from_the_environment_and_the_key_file(
    server: UvicornServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a user next to `make serve` has: no variables but the server's key file.
    home = tmp_path / "home"
    home.mkdir()
    (home / "api_key").write_text(API_KEY + "\n")
    monkeypatch.setenv("AINFINITY_URL", server.url)
    monkeypatch.delenv("AINFINITY_API_KEY", raising=False)
    monkeypatch.setenv("AINFINITY_HOME", str(home))
    with Client() as from_file:
        assert from_file.list_page(limit=1).data is not None

    monkeypatch.setenv("AINFINITY_API_KEY", "wrong-key-0123456789")
    with Client() as from_env, pytest.raises(Unauthorized):
        from_env.list_page(limit=1)


def test_async_client_matches_the_sync_one(server: UvicornServer) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, API_KEY) as client:
            assert await client.health() == {"status": "ok"}
            job = await client.create_job(job_body(name="async-one"))
            assert (job.name, job.status) == ("async-one", JobStatus.PENDING)
            assert (await client.get_job("async-one")).created_at == job.created_at
            names = [j.name async for j in client.list_jobs(status="PENDING", page_size=1)]
            assert "async-one" in names
            events = await client.events("async-one")
            assert events[0].type == EventType.CREATED
            assert await client.metrics("async-one") == []
            assert await client.logs("async-one", tail=5) == ""
            assert (await client.cancel_job("async-one")).status == JobStatus.CANCELLED
            # A finished job's log ends the follow at once (here: nothing was ever written).
            assert [line async for line in client.follow_logs("async-one")] == []
            with pytest.raises(NotFound):
                _ = [line async for line in client.follow_logs("no-such-job")]
            await client.delete_job("async-one")
            with pytest.raises(NotFound):
                await client.get_job("async-one")
            with pytest.raises(ValidationFailed) as invalid:
                await client.create_job({"model": "tiny-random-llama"})
            assert ["body", "dataset"] in [e["loc"] for e in invalid.value.errors or []]

    asyncio.run(scenario())


def test_rate_limited_carries_retry_after(make_settings: MakeSettings) -> None:
    # The real app in-process, through the async client's transport: two requests a minute.
    settings: Settings = make_settings(rate_limit="2/minute")
    transport = httpx.ASGITransport(app=create_app(settings))

    async def scenario() -> None:
        # A wrong key: answered 401 before any route reads the store (no lifespan here).
        async with AsyncClient("http://app", "wrong-key-0123456789", transport=transport) as client:
            for _ in range(2):
                with pytest.raises(Unauthorized):
                    await client.get_job("x")
            with pytest.raises(RateLimited) as limited:
                await client.get_job("x")
        assert limited.value.status_code == 429
        assert limited.value.code == "rate_limited"
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1

    asyncio.run(scenario())


def test_both_error_shapes_become_the_same_typed_errors() -> None:
    native = httpx.Response(404, json={"detail": {"code": "model_not_found", "msg": "No."}})
    openai = httpx.Response(
        400,
        json={"error": {"message": "Bad n.", "type": "invalid_request_error", "param": "n",
                        "code": "invalid_request"}},
    )  # fmt: skip
    # OpenAI leaves `code` null at times: its `type` is the next best code.
    untyped = httpx.Response(
        503,
        json={"error": {"message": "Down.", "type": "server_error", "param": None, "code": None}},
    )
    proxy = httpx.Response(502, text="<html>Bad Gateway</html>")
    listed = httpx.Response(500, json=["not", "an", "object"])

    found = [error_from_response(response) for response in (native, openai, untyped, proxy, listed)]

    assert [type(error) for error in found] == [
        NotFound, BadRequest, ServerError, ServerError, ServerError,
    ]  # fmt: skip
    assert [(e.status_code, e.code, e.msg) for e in found] == [
        (404, "model_not_found", "No."),
        (400, "invalid_request", "Bad n."),
        (503, "server_error", "Down."),
        (502, "http_502", "<html>Bad Gateway</html>"),
        (500, "http_500", "Internal Server Error"),
    ]
    assert found[1].param == "n" and found[0].param is None


def test_chat_stream_reads_text_usage_and_errors_from_data_lines() -> None:
    stream = ChatStream()
    lines = [
        ": keep-alive",
        'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}',
        "",
        'data:{"choices":[{"delta":{"content":"Hel"}}]}',  # the space after the colon is optional
        'data: {"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}',
        'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
        "data: [DONE]",
    ]
    assert "".join(stream.feed(line) for line in lines) == "Hello"
    assert stream.finish_reason == "stop" and stream.usage == {
        "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
    }  # fmt: skip
    stream.end()

    cut = ChatStream()
    cut.feed('data: {"choices":[{"delta":{"content":"Hel"}}]}')
    with pytest.raises(StreamFailed) as incomplete:
        cut.end()
    assert incomplete.value.code == "incomplete_stream"
    with pytest.raises(StreamFailed) as failed:
        ChatStream().feed('data: {"error":{"message":"Gone.","type":"server_error","code":null}}')
    assert (failed.value.code, failed.value.msg, failed.value.kind) == (
        "server_error", "Gone.", "server_error",
    )  # fmt: skip
    with pytest.raises(StreamFailed) as garbled:
        ChatStream().feed("data: {not json")
    assert garbled.value.code == "invalid_chunk"
