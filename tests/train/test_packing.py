"""Sequence packing: best-fit packs, and a real model that cannot tell packed from padded."""

from __future__ import annotations

from typing import Any

import pytest

from ainfinity.train.dataset import IGNORE_INDEX, CausalLMCollator
from ainfinity.train.packing import (
    REAL_TOKENS_KEY,
    PackedRowsCollator,
    PaddingFreeCollator,
    pack_examples,
)
from ainfinity.train.tokenization import load_examples

from .builders import SAMPLES_DIR

SAMPLES = ["tiny_text.jsonl", "tiny_sft.jsonl", "tiny_chat.jsonl"]


def example(first_id: int, length: int) -> dict[str, list[int]]:
    """An example whose ids say which it is; its labels differ from its ids to be told apart."""
    input_ids = list(range(first_id, first_id + length))
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * length,
        "labels": [-id_ for id_ in input_ids],
    }


class TestPackExamples:
    def test_fills_the_fullest_pack_that_fits_longest_first(self) -> None:
        lengths = {100: 6, 200: 5, 300: 4, 400: 3, 500: 2}
        examples = [example(first_id, length) for first_id, length in lengths.items()]

        packs = pack_examples(examples, max_seq_length=10)

        # 6 opens a pack, 5 another; 4 fills the first exactly, 3 and then 2 fill the second.
        starts = [[i for i in pack["input_ids"] if i % 100 == 0] for pack in packs]
        assert starts == [[100, 300], [200, 400, 500]]

    def test_restarts_positions_and_masks_the_first_label_of_each_example(self) -> None:
        packs = pack_examples([example(10, 3), example(20, 2)], max_seq_length=8)

        assert packs == [
            {
                "input_ids": [10, 11, 12, 20, 21],
                "labels": [IGNORE_INDEX, -11, -12, IGNORE_INDEX, -21],
                "position_ids": [0, 1, 2, 0, 1],
            }
        ]

    def test_keeps_every_example_once_within_the_limit_deterministically(self) -> None:
        lengths = [7, 3, 9, 1, 4, 4, 8, 2, 6, 5, 5, 10, 1, 3]
        examples = [example(100 * (i + 1), length) for i, length in enumerate(lengths)]

        packs = pack_examples(examples, max_seq_length=10)

        assert packs == pack_examples(examples, max_seq_length=10)
        assert all(len(pack["input_ids"]) <= 10 for pack in packs)
        assert sorted(i for pack in packs for i in pack["input_ids"]) == sorted(
            i for ex in examples for i in ex["input_ids"]
        )
        # 68 tokens need at least 7 packs of 10; best-fit decreasing finds 7 here.
        assert len(packs) == 7

    def test_refuses_an_example_longer_than_a_pack(self) -> None:
        with pytest.raises(ValueError, match="example 1 has 5 tokens"):
            pack_examples([example(10, 2), example(20, 5)], max_seq_length=4)


class TestPaddingFreeCollator:
    def test_concatenates_packs_into_one_row_without_attention_mask(self) -> None:
        packs = pack_examples([example(10, 3), example(20, 2), example(30, 4)], max_seq_length=5)

        batch = PaddingFreeCollator()(packs)

        assert set(batch) == {"input_ids", "labels", "position_ids"}
        assert batch["input_ids"].tolist() == [[30, 31, 32, 33, 10, 11, 12, 20, 21]]
        assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1]]
        assert batch["labels"].tolist() == [[-100, -31, -32, -33, -100, -11, -12, -100, -21]]
        assert str(batch["input_ids"].dtype) == "torch.int64"

    def test_accepts_unpacked_examples(self) -> None:
        batch = PaddingFreeCollator()([example(10, 2), example(20, 3)])

        assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2]]
        assert batch["labels"].tolist() == [[-100, -11, -100, -21, -22]]


@pytest.fixture(scope="module")
def model_and_tokenizer() -> Any:
    """The tiny random Llama in fp32, eval mode, and with the cache off as the Trainer runs it:
    transformers only derives the per-example mask from position ids when there is no cache."""
    from ainfinity.train.tiny_model import build_tiny_random_llama

    model, tokenizer = build_tiny_random_llama(seed=0)
    model.config.use_cache = False
    return model.eval(), tokenizer


def sample_examples(tokenizer: Any, name: str, count: int = 12) -> list[dict[str, list[int]]]:
    return load_examples(SAMPLES_DIR / name, tokenizer, max_seq_length=256)[:count]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("sample", SAMPLES)
def test_a_packed_row_gives_each_example_its_own_logits(
    model_and_tokenizer: Any, sample: str, attn_implementation: str
) -> None:
    import torch

    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation(attn_implementation)
    examples = sample_examples(tokenizer, sample)
    batch = PaddingFreeCollator()(pack_examples(examples, max_seq_length=4096))
    order = _order_in_row(batch["input_ids"][0].tolist(), examples)

    with torch.no_grad():
        packed = model(**batch).logits[0]
        start = 0
        for index in order:
            alone = torch.tensor([examples[index]["input_ids"]])
            expected = model(input_ids=alone).logits[0]
            torch.testing.assert_close(
                packed[start : start + len(expected)], expected, atol=1e-5, rtol=0
            )
            start += len(expected)
    assert start == packed.shape[0]


@pytest.mark.parametrize("sample", SAMPLES)
def test_packing_leaves_loss_and_gradients_unchanged(model_and_tokenizer: Any, sample: str) -> None:
    import torch

    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation("sdpa")
    examples = sample_examples(tokenizer, sample)
    padded = CausalLMCollator.for_tokenizer(tokenizer)(examples)
    # Packs of 128 tokens: several packs, which the collator joins into one row.
    packs = pack_examples(examples, max_seq_length=128)
    packed = PaddingFreeCollator()(packs)

    assert len(packs) > 1
    assert packed["input_ids"].shape == (1, sum(len(ex["input_ids"]) for ex in examples))
    padded_loss, padded_grads = _loss_and_grads(model, padded)
    packed_loss, packed_grads = _loss_and_grads(model, packed)
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=0)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("sample", SAMPLES)
def test_packs_as_padded_rows_leave_loss_and_gradients_unchanged(
    model_and_tokenizer: Any, sample: str
) -> None:
    # The sdpa/eager layout: one row per pack, the shorter packs padded at the end.
    import torch

    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation("sdpa")
    examples = sample_examples(tokenizer, sample)
    padded = CausalLMCollator.for_tokenizer(tokenizer)(examples)
    packs = pack_examples(examples, max_seq_length=128)
    rows = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)(packs)
    real_tokens = rows.pop(REAL_TOKENS_KEY)

    longest = max(len(pack["input_ids"]) for pack in packs)
    assert rows["input_ids"].shape == (len(packs), longest)
    assert len({len(pack["input_ids"]) for pack in packs}) > 1  # some rows carry padding
    assert int(real_tokens) == sum(len(ex["input_ids"]) for ex in examples)
    padded_loss, padded_grads = _loss_and_grads(model, padded)
    packed_loss, packed_grads = _loss_and_grads(model, rows)
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=0)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_checks_above_catch_attention_across_examples(model_and_tokenizer: Any) -> None:
    # Two ways the boundaries get lost: position ids that run on (plain concatenation), and a
    # KV cache, which stops transformers from deriving the per-example mask.
    import torch

    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation("sdpa")
    examples = sample_examples(tokenizer, "tiny_sft.jsonl", count=2)
    batch = PaddingFreeCollator()(examples)
    second = torch.tensor([examples[1]["input_ids"]])
    offset = len(examples[0]["input_ids"])
    running_positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)

    with torch.no_grad():
        expected = model(input_ids=second).logits[0]
        concatenated = model(**{**batch, "position_ids": running_positions}).logits[0]
        cached = model(**batch, use_cache=True).logits[0]
        packed = model(**batch).logits[0]

    torch.testing.assert_close(packed[offset:], expected, atol=1e-5, rtol=0)
    assert (concatenated[offset:] - expected).abs().max() > 1e-2
    assert (cached[offset:] - expected).abs().max() > 1e-2


def _order_in_row(row: list[int], examples: list[dict[str, list[int]]]) -> list[int]:
    """Which example sits where in a packed row (they are matched by their token ids)."""
    order, start, unused = [], 0, set(range(len(examples)))
    while start < len(row):
        index = next(
            i
            for i in sorted(unused)
            if row[start : start + len(examples[i]["input_ids"])] == examples[i]["input_ids"]
        )
        unused.remove(index)
        order.append(index)
        start += len(examples[index]["input_ids"])
    assert not unused
    return order


def _loss_and_grads(model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad()
    return loss.detach(), grads
