"""`ainfinity.client` for models and chat: against the shared server with real fine-tuned
models (typed models, pages, ownership, deletion; whole and streamed answers compared with
the official SDK's), and against a held-back stream for what a real model streams too
fast to show (pieces handed over as they arrive, error chunks, cut streams)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest

from ainfinity.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    StreamFailed,
    Unauthorized,
)
from ainfinity.schema.model import Model
from ainfinity.schema.openai import ChatCompletion
from tests.builders import job_body
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
LORA = "ft:tiny-random-llama:lora-a"
QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]


@pytest.fixture(scope="module", autouse=True)
def doomed_job(served: Served) -> str:
    """A small job of this module's own, for the test that deletes its model: launched as
    the module starts, it trains while the other tests run."""
    body = job_body(
        name="client-doomed",
        dataset=str(SAMPLE_CHAT),
        hyperparameters={**TRAINING, "max_steps": 2, "save_steps": None},
    )
    with served.api(ALICE_KEY) as api:
        response = api.post("/api/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return "client-doomed"


@pytest.fixture
def alice(served: Served) -> Iterator[Client]:
    with Client(served.server.url, ALICE_KEY) as client:
        yield client


def sdk_answer(served: Served, model: str, messages: list[dict[str, str]], tokens: int) -> str:
    """The official SDK's greedy, non-streamed answer: what ours must match."""
    answer = served.sdk().chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=tokens,
    )
    return answer.choices[0].message.content or ""


class TestModels:
    def test_pages_and_the_iterator_list_the_same_models_as_the_api(
        self, served: Served, alice: Client
    ) -> None:
        with served.api(ALICE_KEY) as api:
            expected = [m["id"] for m in api.get("/api/v1/models?limit=100").json()["data"]]
        walked: list[str] = []
        page = alice.list_models(limit=1)
        while True:
            walked += [model.id for model in page.data]
            if not page.has_more:
                break
            assert page.next_cursor is not None
            page = alice.list_models(limit=1, after=page.next_cursor)
        assert walked == expected
        assert [model.id for model in alice.iter_models(page_size=2)] == expected
        assert {FULL, LORA} <= set(expected)

    def test_a_model_comes_back_typed_with_its_lineage(self, served: Served, alice: Client) -> None:
        model = alice.get_model(FULL)
        assert isinstance(model, Model)
        assert (model.job, model.method, model.owner) == ("full-a", "full", "alice")
        assert model.lineage is not None and model.metrics is not None
        assert model.lineage.dataset == str(SAMPLE_CHAT)
        assert model.lineage.dataset_sha256 == hashlib.sha256(SAMPLE_CHAT.read_bytes()).hexdigest()
        assert model.lineage.hyperparameters["max_steps"] == TRAINING["max_steps"]
        assert model.metrics.train_loss is not None and model.metrics.train_loss > 0
        assert model.checkpoints == [f"{FULL}:ckpt-{step}" for step in (10, 20, 30)]
        # A checkpoint id (colons and all) is a path segment of its own.
        assert (
            alice.get_model(f"{FULL}:ckpt-20").path == f"{served.full['output_dir']}/checkpoint-20"
        )
        lora = alice.get_model(LORA).lineage
        assert lora is not None and lora.lora is not None and lora.lora["r"] == 8

    def test_another_users_model_is_not_found_and_base_models_are_not_deleted(
        self, served: Served, alice: Client
    ) -> None:
        with Client(served.server.url, BOB_KEY) as bob:
            with pytest.raises(NotFound) as hidden:
                bob.get_model(FULL)
            assert FULL not in [model.id for model in bob.iter_models()]
            with pytest.raises(NotFound):
                bob.delete_model(FULL)
        assert (hidden.value.status_code, hidden.value.code) == (404, "model_not_found")
        with pytest.raises(Conflict) as refused:
            alice.delete_model("tiny-random-llama")
        assert refused.value.code == "model_not_deletable"

    def test_delete_model_unregisters_it(
        self, served: Served, alice: Client, doomed_job: str
    ) -> None:
        with served.api(ALICE_KEY) as api:
            model_id = wait_job(api, doomed_job)["fine_tuned_model"]
        assert alice.get_model(model_id).job == "client-doomed"

        alice.delete_model(model_id)

        with pytest.raises(NotFound):
            alice.get_model(model_id)
        assert alice.get_job("client-doomed").fine_tuned_model is None
        with pytest.raises(NotFound) as again:
            alice.delete_model(model_id)
        assert again.value.code == "model_not_found"


class TestChat:
    def test_chat_returns_the_completion_the_sdk_gets(self, served: Served, alice: Client) -> None:
        completion = alice.chat(FULL, QUESTION, temperature=0, max_tokens=20)
        assert isinstance(completion, ChatCompletion)
        assert completion.model == FULL and completion.id.startswith("chatcmpl-")
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert completion.usage.completion_tokens > 0
        assert completion.choices[0].message.content == sdk_answer(served, FULL, QUESTION, 20)

    def test_chat_stream_yields_the_same_answer_in_pieces(
        self, served: Served, alice: Client
    ) -> None:
        conversation = [
            {"role": "system", "content": "You add numbers."},
            *QUESTION,
            {"role": "assistant", "content": "5"},
            {"role": "user", "content": "And 4 plus 4?"},
        ]
        for model in (f"{FULL}:ckpt-10", LORA):
            pieces = list(alice.chat_stream(model, conversation, temperature=0, max_tokens=24))
            assert len(pieces) > 1, pieces
            assert "".join(pieces) == sdk_answer(served, model, conversation, 24)

    def test_openai_shaped_errors_are_typed(self, served: Served, alice: Client) -> None:
        with pytest.raises(NotFound) as unknown:
            alice.chat("ft:tiny-random-llama:no-such-job", QUESTION)
        assert (unknown.value.code, unknown.value.status_code) == ("model_not_found", 404)
        assert "no-such-job" in unknown.value.msg
        # Before any byte of a stream: the same typed error, not a StreamFailed.
        with pytest.raises(NotFound):
            list(alice.chat_stream("ft:tiny-random-llama:no-such-job", QUESTION))
        with pytest.raises(BadRequest) as two:
            alice.chat(FULL, QUESTION, n=2)
        assert (two.value.code, two.value.param) == ("invalid_request", "n")
        assert "n=1" in two.value.msg
        with pytest.raises(BadRequest) as unsupported:
            list(alice.chat_stream(FULL, QUESTION, logprobs=True))
        assert unsupported.value.param == "logprobs"
        assert unsupported.value.headers["x-should-retry"] == "false"
        with Client(served.server.url, "wrong-key-0123456789") as stranger:
            with pytest.raises(Unauthorized) as refused:
                stranger.chat(FULL, QUESTION)
        assert refused.value.code == "unauthorized"
        with Client(served.server.url, BOB_KEY) as bob, pytest.raises(NotFound):
            bob.chat(FULL, QUESTION)


def test_async_client_lists_gets_chats_and_streams(served: Served) -> None:
    async def scenario() -> None:
        async with AsyncClient(served.server.url, ALICE_KEY) as client:
            ids = [model.id async for model in client.iter_models(page_size=1)]
            assert ids == [model.id for model in (await client.list_models(limit=100)).data]
            assert (await client.get_model(LORA)).method == "lora"
            whole = await client.chat(LORA, QUESTION, temperature=0, max_tokens=16)
            pieces = [
                p async for p in client.chat_stream(LORA, QUESTION, temperature=0, max_tokens=16)
            ]
            assert len(pieces) > 1
            assert "".join(pieces) == whole.choices[0].message.content
            with pytest.raises(NotFound):
                await client.get_model("ft:tiny-random-llama:no-such-job")
            with pytest.raises(Conflict):
                await client.delete_model("house-llama")
            with pytest.raises(BadRequest):
                _ = [p async for p in client.chat_stream(FULL, [])]

    asyncio.run(scenario())


# -- a held-back stream ----------------------------------------------------------------------


def test_pieces_are_handed_over_as_they_arrive() -> None:
    with HeldStream(["Hel", "lo"], [", world"]) as held, Client(held.url, "k") as client:
        pieces = client.chat_stream("m", QUESTION, max_tokens=5, temperature=None)
        # The server is still holding the rest back: these could only come from a stream.
        assert [next(pieces), next(pieces)] == ["Hel", "lo"]
        held.release()
        assert list(pieces) == [", world"]
    body = held.bodies[0]
    # Options left at None are left out; the request asks for a stream.
    assert body == {"model": "m", "messages": QUESTION, "max_tokens": 5, "stream": True}
    assert held.headers[0]["X-API-Key"] == "k"


def test_an_error_chunk_or_a_cut_stream_raises_stream_failed() -> None:
    failing = error_chunk("worker_unavailable", "The inference worker stopped while answering.")
    with HeldStream(["Hel"], ["lo"], ending=failing) as held, Client(held.url, "k") as client:
        held.release()
        received: list[str] = []
        with pytest.raises(StreamFailed) as failed:
            received.extend(client.chat_stream("m", QUESTION))
    assert received == ["Hel", "lo"]
    assert failed.value.code == "worker_unavailable" and failed.value.kind == "server_error"
    assert "stopped while answering" in failed.value.msg

    with HeldStream(["Hel"], [], ending="cut") as held, Client(held.url, "k") as client:
        held.release()
        with pytest.raises(StreamFailed) as cut:
            list(client.chat_stream("m", QUESTION))
    assert cut.value.code == "incomplete_stream"


def test_async_pieces_arrive_before_the_stream_ends() -> None:
    async def read(held: HeldStream) -> list[str]:
        async with AsyncClient(held.url, "k") as client:
            pieces = client.chat_stream("m", QUESTION)
            first = await anext(pieces)
            held.release()
            return [first, *[piece async for piece in pieces]]

    with HeldStream(["Hel"], ["lo"]) as held:
        assert asyncio.run(read(held)) == ["Hel", "lo"]

    async def fail(held: HeldStream) -> StreamFailed:
        async with AsyncClient(held.url, "k") as client:
            with pytest.raises(StreamFailed) as failed:
                _ = [piece async for piece in client.chat_stream("m", QUESTION)]
            return failed.value

    failing = error_chunk("generation_failed", "generate() raised")
    with HeldStream(["Hel"], [], ending=failing) as held:
        held.release()
        assert asyncio.run(fail(held)).code == "generation_failed"
