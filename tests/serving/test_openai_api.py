"""The OpenAI-compatible `/v1` API, through the official `openai` SDK parsing strictly.

The served answers are checked against `generate()` on the saved models, run here with
transformers alone: the gateway, the worker and the chat template must not change a token.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest

from tests.builders import API_KEY
from tests.serving.conftest import ALICE_KEY, BASE_MODELS, BOB_KEY, Served
from tests.serving.reference import greedy_chat, greedy_text, load_saved

pytestmark = pytest.mark.timeout(300)

MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
TOKENS = 24


def output_dir(job: dict) -> Path:
    return Path(job["output_dir"])


class TestModels:
    def test_models_list_has_the_callers_models_and_the_base_models(self, served: Served) -> None:
        models = list(served.sdk(ALICE_KEY).models.list())
        ids = [model.id for model in models]

        fine_tuned = [i for i in ids if i.startswith("ft:")]
        assert {served.full["fine_tuned_model"], served.lora["fine_tuned_model"]} <= set(ids)
        assert served.full["fine_tuned_model"] == "ft:tiny-random-llama:full-a"
        # Newest first: what alice's jobs made, then the base models.
        assert ids == fine_tuned + sorted(BASE_MODELS, key=ids.index)
        assert set(ids[len(fine_tuned) :]) == BASE_MODELS
        assert [m.created for m in models] == sorted((m.created for m in models), reverse=True)

    def test_another_users_models_are_not_listed(self, served: Served) -> None:
        ids = {model.id for model in served.sdk(BOB_KEY).models.list()}

        assert ids == BASE_MODELS

    def test_retrieve_gives_openai_model_shape(self, served: Served) -> None:
        model = served.sdk().models.retrieve(served.lora["fine_tuned_model"])

        assert model.id == "ft:tiny-random-llama:lora-a"
        assert model.object == "model" and model.owned_by == "alice"
        assert model.created > 1_700_000_000

    def test_unknown_model_is_not_found(self, served: Served) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            served.sdk().models.retrieve("ft:tiny-random-llama:no-such-job")
        assert caught.value.code == "model_not_found"

    def test_a_wrong_key_is_an_authentication_error(self, served: Served) -> None:
        with pytest.raises(openai.AuthenticationError) as caught:
            served.sdk("not-a-key-of-this-server").models.list()
        assert caught.value.response.headers["x-should-retry"] == "false"


class TestGreedyAnswers:
    """Temperature 0 gives exactly what `generate()` gives on the saved model."""

    def test_full_fine_tune_whole_and_streamed(self, served: Served) -> None:
        model, tokenizer = load_saved(output_dir(served.full))
        expected = greedy_chat(model, tokenizer, MESSAGES, TOKENS)
        assert len(expected) >= 8, "the reference must be a real answer"
        sdk = served.sdk()
        model_id = served.full["fine_tuned_model"]

        whole = sdk.chat.completions.create(
            model=model_id, messages=MESSAGES, temperature=0, max_tokens=TOKENS
        )
        pieces = list(
            sdk.chat.completions.create(
                model=model_id, messages=MESSAGES, temperature=0, max_tokens=TOKENS, stream=True
            )
        )

        assert whole.choices[0].message.content == expected
        assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
        assert whole.model == model_id
        assert whole.usage.completion_tokens <= TOKENS
        streamed = "".join(c.choices[0].delta.content or "" for c in pieces)
        assert streamed == expected
        assert pieces[0].choices[0].delta.role == "assistant"
        assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
        assert all(c.object == "chat.completion.chunk" and c.id == pieces[0].id for c in pieces)

    def test_lora_model_is_its_adapter_over_the_base(self, served: Served) -> None:
        seed = served.lora["spec"]["hyperparameters"]["seed"]
        model, tokenizer = load_saved(output_dir(served.lora), lora_base_seed=seed)
        expected = greedy_chat(model, tokenizer, MESSAGES, TOKENS)
        # The adapter changes the answer: the base alone says something else.
        with model.disable_adapter():
            assert greedy_chat(model, tokenizer, MESSAGES, TOKENS) != expected
        assert len(expected) >= 8

        answer = served.sdk().chat.completions.create(
            model=served.lora["fine_tuned_model"],
            messages=MESSAGES,
            temperature=0,
            max_tokens=TOKENS,
        )

        assert answer.choices[0].message.content == expected

    def test_a_checkpoint_answers_as_its_own_weights(self, served: Served) -> None:
        checkpoint = output_dir(served.full) / "checkpoint-10"
        model, tokenizer = load_saved(checkpoint)
        expected = greedy_chat(model, tokenizer, MESSAGES, TOKENS)
        final, _ = load_saved(output_dir(served.full))
        assert expected != greedy_chat(final, tokenizer, MESSAGES, TOKENS)

        answer = served.sdk().chat.completions.create(
            model=f"{served.full['fine_tuned_model']}:ckpt-10",
            messages=MESSAGES,
            temperature=0,
            max_tokens=TOKENS,
        )

        assert answer.choices[0].message.content == expected

    def test_completions_encode_the_prompt_as_training_did(self, served: Served) -> None:
        model, tokenizer = load_saved(output_dir(served.full))
        expected = greedy_text(model, tokenizer, "Once upon a time", 16)

        completion = served.sdk().completions.create(
            model=served.full["fine_tuned_model"],
            prompt="Once upon a time",
            temperature=0,
            max_tokens=16,
        )

        assert completion.choices[0].text == expected
        assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
        assert completion.usage.prompt_tokens == len("Once upon a time") + 1  # bytes + bos


class TestStreaming:
    def test_include_usage_sends_a_last_chunk_with_the_usage(self, served: Served) -> None:
        chunks = list(
            served.sdk().chat.completions.create(
                model="tiny-random-llama",
                messages=MESSAGES,
                max_tokens=12,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

        usage_chunk = chunks[-1]
        assert usage_chunk.choices == [] and usage_chunk.usage is not None
        assert all(chunk.usage is None for chunk in chunks[:-1])
        generated = sum(1 for _ in chunks[1:-2])  # one chunk per decoded piece, at most
        assert usage_chunk.usage.completion_tokens >= min(generated, 1)
        assert usage_chunk.usage.total_tokens == (
            usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
        )

    def test_stop_sequences_cut_the_answer(self, served: Served) -> None:
        model, tokenizer = load_saved(output_dir(served.full))
        expected = greedy_chat(model, tokenizer, MESSAGES, TOKENS)
        stop = expected[3:5]
        cut = expected.index(stop)  # its first occurrence
        assert stop and cut > 0

        answer = served.sdk().chat.completions.create(
            model=served.full["fine_tuned_model"],
            messages=MESSAGES,
            temperature=0,
            max_tokens=TOKENS,
            stop=[stop],
        )
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in served.sdk().chat.completions.create(
                model=served.full["fine_tuned_model"],
                messages=MESSAGES,
                temperature=0,
                max_tokens=TOKENS,
                stop=[stop],
                stream=True,
            )
        )

        assert answer.choices[0].message.content == expected[:cut]
        assert answer.choices[0].finish_reason == "stop"
        assert streamed == answer.choices[0].message.content

    def test_streamed_completions(self, served: Served) -> None:
        # The SDK's own `Completion` type requires a finish_reason in every chunk, while
        # OpenAI (and this server) send null until the last: parsed without strictness here.
        sdk = openai.OpenAI(base_url=f"{served.server.url}/v1", api_key=ALICE_KEY)
        chunks = list(
            sdk.completions.create(
                model="tiny-random-llama", prompt="abc", max_tokens=8, temperature=0, stream=True
            )
        )
        whole = served.sdk().completions.create(
            model="tiny-random-llama", prompt="abc", max_tokens=8, temperature=0
        )

        assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text
        assert [c.choices[0].finish_reason for c in chunks][-1] == whole.choices[0].finish_reason
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
        assert all(c.object == "text_completion" for c in chunks)


class TestBadInput:
    """A 4xx in OpenAI's shape, never a 500 or a hang."""

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"messages": []}, "messages"),
            ({"messages": "hello"}, "messages"),
            ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
            ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
            ({"max_tokens": -1}, "max_tokens"),
            ({"max_tokens": 10**12}, "max_tokens"),
            ({"max_tokens": 100_000}, "max_tokens"),
            ({"temperature": "hot"}, "temperature"),
            ({"n": 2}, "n"),
            ({"logprobs": True}, "logprobs"),
            ({"tools": [{"type": "function"}]}, "tools"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"best_friend": "yes"}, "best_friend"),
            ({"stream_options": {"include_usage": True}}, "stream_options"),
        ],
    )
    def test_invalid_chat_requests_are_400_naming_the_field(
        self, served: Served, body: dict, param: str
    ) -> None:
        request = {"model": "tiny-random-llama", "messages": MESSAGES, **body}
        with served.api(ALICE_KEY) as api:
            response = api.post("/v1/chat/completions", json=request)

        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert response.headers["x-should-retry"] == "false"

    def test_the_sdk_raises_bad_request_for_n_2(self, served: Served) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            served.sdk().chat.completions.create(model="tiny-random-llama", messages=MESSAGES, n=2)
        assert caught.value.param == "n"

    def test_unknown_model_is_404_model_not_found(self, served: Served) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            served.sdk().chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert caught.value.code == "model_not_found"

    def test_a_1mb_prompt_is_refused_before_it_is_read_whole(self, served: Served) -> None:
        with pytest.raises(openai.APIStatusError) as caught:
            served.sdk().completions.create(model="tiny-random-llama", prompt="x" * 1_048_576)
        assert caught.value.status_code == 413
        assert caught.value.code == "body_too_large"

    def test_a_prompt_longer_than_the_context_is_400(self, served: Served) -> None:
        # 2,048 positions: 4,000 bytes are 4,001 tokens of the byte-level tokenizer.
        with pytest.raises(openai.BadRequestError) as caught:
            served.sdk().completions.create(model="tiny-random-llama", prompt="y" * 4000)
        assert caught.value.code == "context_length_exceeded"

    def test_wrong_body_types_and_non_json_are_400(self, served: Served) -> None:
        with served.api(ALICE_KEY) as api:
            for content in (b"[1, 2]", b"not json", b'{"model": 5, "prompt": "x"}'):
                response = api.post(
                    "/v1/completions", content=content, headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, response.text
                assert "error" in response.json()


class TestOwnership:
    def test_another_users_model_is_404_on_every_route(self, served: Served) -> None:
        model_id = served.full["fine_tuned_model"]
        sdk = served.sdk(BOB_KEY)
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve(model_id)
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model=model_id, messages=MESSAGES)
        with pytest.raises(openai.NotFoundError):
            sdk.completions.create(model=f"{model_id}:ckpt-10", prompt="x")
        with served.api(BOB_KEY) as api:
            assert api.get(f"/api/v1/models/{model_id}").status_code == 404
            assert api.delete(f"/api/v1/models/{model_id}").status_code == 404
            assert api.delete(f"/v1/models/{model_id}").status_code == 404
        # An admin sees it.
        assert served.sdk(API_KEY).models.retrieve(model_id).owned_by == "alice"


def test_the_same_rate_limit_as_the_native_api(tmp_path: Path) -> None:
    from tests.serving.conftest import sdk_client, serving_server

    server = serving_server(tmp_path, AINFINITY_RATE_LIMIT="3/minute")
    with server:
        sdk = sdk_client(server, ALICE_KEY)
        sdk.models.list()
        with server.client(ALICE_KEY) as api:
            assert api.get("/api/v1/jobs").status_code == 200
        sdk.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.models.list()
        assert caught.value.response.headers["retry-after"]
        assert caught.value.body["code"] == "rate_limited"  # type: ignore[index]


def test_dataset_hash_in_lineage(served: Served) -> None:
    from tests.serving.conftest import SAMPLE_CHAT

    with served.api(ALICE_KEY) as api:
        model = api.get(f"/api/v1/models/{served.full['fine_tuned_model']}").json()
    expected = hashlib.sha256(SAMPLE_CHAT.read_bytes()).hexdigest()
    assert model["lineage"]["dataset_sha256"] == expected
