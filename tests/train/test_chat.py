"""Chat rows: the default chat template, and loss masks that cover assistant turns only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.chat import DEFAULT_CHAT_TEMPLATE, ensure_chat_template
from ainfinity.train.dataset import IGNORE_INDEX, DatasetValidationError
from ainfinity.train.tokenization import load_examples, token_statistics

from .builders import SAMPLES_DIR, write_jsonl

CONVERSATION = [
    {"role": "system", "content": "You add numbers."},
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "4, I think. ¿Sí? 😀"},
    {"role": "user", "content": "And 3 plus 3?"},
    {"role": "assistant", "content": "6"},
]

# Qwen2.5's layout: a default system prompt, and a newline after each end-of-turn marker.
QWEN_LIKE_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def tokenizer(byte_tokenizer: Any) -> Any:
    """A copy per test: templates are installed on the tokenizer object."""
    return copy.deepcopy(byte_tokenizer)


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def labelled_runs(tokenizer: Any, labels: list[int]) -> list[str]:
    """Decode each maximal run of learnt labels, keeping special tokens."""
    runs: list[list[int]] = [[]]
    for label in labels:
        if label == IGNORE_INDEX:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(label)
    return [tokenizer.decode(run) for run in runs if run]


class TestDefaultChatTemplate:
    def test_is_installed_on_a_tokenizer_without_one_and_saved_with_it(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        from transformers import AutoTokenizer

        assert tokenizer.chat_template is None
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION})

        load_examples(path, tokenizer, max_seq_length=512)
        tokenizer.save_pretrained(tmp_path / "saved")
        reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")

        assert tokenizer.chat_template == reloaded.chat_template == DEFAULT_CHAT_TEMPLATE

    def test_renders_chatml_turns_closed_by_eos(self, tokenizer: Any) -> None:
        ensure_chat_template(tokenizer)

        prompt = tokenizer.apply_chat_template(
            CONVERSATION[:2], tokenize=False, add_generation_prompt=True
        )

        assert prompt == (
            "<s><|im_start|>system\nYou add numbers.</s>"
            "<|im_start|>user\nWhat is 2 plus 2?</s><|im_start|>assistant\n"
        )

    def test_keeps_a_template_the_tokenizer_already_has(self, tokenizer: Any) -> None:
        tokenizer.chat_template = QWEN_LIKE_TEMPLATE

        assert ensure_chat_template(tokenizer) is False
        assert tokenizer.chat_template == QWEN_LIKE_TEMPLATE


class TestChatMasking:
    def test_learns_exactly_the_assistant_contents_and_their_eos(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION})

        [example] = load_examples(path, tokenizer, max_seq_length=512)

        # Built piece by piece (the byte tokenizer has no merges), independently of the code's
        # render-and-diff: scaffolding, system and user tokens masked, each assistant content
        # and the eos that ends its turn learnt.
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        expected_ids, expected_labels = [bos], [IGNORE_INDEX]
        for message in CONVERSATION:
            header = ids(tokenizer, f"<|im_start|>{message['role']}\n")
            content = ids(tokenizer, message["content"]) + [eos]
            expected_ids += header + content
            learnt = message["role"] == "assistant"
            expected_labels += [IGNORE_INDEX] * len(header)
            expected_labels += content if learnt else [IGNORE_INDEX] * len(content)
        assert example["input_ids"] == expected_ids
        assert example["labels"] == expected_labels
        assert labelled_runs(tokenizer, example["labels"]) == ["4, I think. ¿Sí? 😀</s>", "6</s>"]

    def test_an_assistant_turn_of_weight_0_is_context_token_by_token(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        weighted = copy.deepcopy(CONVERSATION)
        weighted[2]["weight"] = 0  # OpenAI's format: this answer is not to be learnt
        weighted[4]["weight"] = 1
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": weighted})

        [example] = load_examples(path, tokenizer, max_seq_length=512)

        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        expected_ids, expected_labels = [bos], [IGNORE_INDEX]
        for index, message in enumerate(CONVERSATION):
            header = ids(tokenizer, f"<|im_start|>{message['role']}\n")
            content = ids(tokenizer, message["content"]) + [eos]
            expected_ids += header + content
            learnt = message["role"] == "assistant" and index != 2
            expected_labels += [IGNORE_INDEX] * len(header)
            expected_labels += content if learnt else [IGNORE_INDEX] * len(content)
        # The same tokens as without weights (the template ignores the key)...
        assert example["input_ids"] == expected_ids
        # ...and only the last answer learnt.
        assert example["labels"] == expected_labels
        assert labelled_runs(tokenizer, example["labels"]) == ["6</s>"]

    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            ({"role": "user", "content": "hi", "weight": 0}, "on assistant messages only"),
            ({"role": "assistant", "content": "hi", "weight": 0.5}, "'weight' is 0 or 1"),
        ],
    )
    def test_weights_are_0_or_1_on_assistant_turns(
        self, tmp_path: Path, message: dict[str, Any], reason: str
    ) -> None:
        from ainfinity.train.dataset import validate_dataset

        row = {"messages": [message, {"role": "assistant", "content": "ok"}]}
        report = validate_dataset(write_jsonl(tmp_path / "d.jsonl", row))
        assert [e.line for e in report.errors] == [1] and reason in report.errors[0].reason

    def test_a_conversation_with_nothing_to_learn_is_refused(self, tmp_path: Path) -> None:
        from ainfinity.train.dataset import validate_dataset

        row = {"messages": [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a", "weight": 0}]}  # fmt: skip
        report = validate_dataset(write_jsonl(tmp_path / "d.jsonl", row))
        assert "all of weight 0" in report.errors[0].reason

    def test_training_continues_the_prompt_that_inference_renders(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION})

        [example] = load_examples(path, tokenizer, max_seq_length=512)
        prompt = tokenizer.apply_chat_template(
            CONVERSATION[:-1], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = ids(tokenizer, prompt)

        assert example["input_ids"][: len(prompt_ids)] == prompt_ids
        answer = example["labels"][len(prompt_ids) :]
        assert answer == example["input_ids"][len(prompt_ids) :] == ids(tokenizer, "6</s>")
        assert example["labels"][len(prompt_ids) - 1] == IGNORE_INDEX

    def test_masks_by_the_tokenizers_own_template(self, tmp_path: Path, tokenizer: Any) -> None:
        tokenizer.chat_template = QWEN_LIKE_TEMPLATE
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION[1:]})

        [example] = load_examples(path, tokenizer, max_seq_length=512)

        text = tokenizer.decode(example["input_ids"])
        assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
        # What follows the generation prompt, up to the next turn, is what the model must say.
        assert labelled_runs(tokenizer, example["labels"]) == [
            "4, I think. ¿Sí? 😀<|im_end|>\n",
            "6<|im_end|>\n",
        ]

    def test_learns_every_token_without_completion_only_loss(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION})

        [masked] = load_examples(path, tokenizer, max_seq_length=512)
        [example] = load_examples(path, tokenizer, max_seq_length=512, completion_only_loss=False)

        assert example["input_ids"] == masked["input_ids"]
        assert example["labels"] == example["input_ids"]

    def test_drops_conversations_whose_answers_are_cut_away(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        long_question = [
            {"role": "user", "content": "x" * 100},
            {"role": "assistant", "content": "y"},
        ]
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": long_question}, "")
        with pytest.raises(DatasetValidationError, match="no row has an assistant token"):
            load_examples(path, tokenizer, max_seq_length=96)

        write_jsonl(path, {"messages": long_question}, {"messages": CONVERSATION[1:3]})
        [kept] = load_examples(path, tokenizer, max_seq_length=96)
        assert labelled_runs(tokenizer, kept["labels"]) == ["4, I think. ¿Sí? 😀</s>"]

    def test_masks_the_chat_sample(self, tokenizer: Any) -> None:
        examples = load_examples(SAMPLES_DIR / "tiny_chat.jsonl", tokenizer, max_seq_length=256)

        assert len(examples) == 64
        for example in examples:
            [answer] = labelled_runs(tokenizer, example["labels"])
            assert answer.removesuffix("</s>").isdigit()


class TestUnmaskableTemplates:
    def test_names_the_line_a_template_refuses(self, tmp_path: Path, tokenizer: Any) -> None:
        tokenizer.chat_template = (
            "{% for message in messages %}"
            "{% if message['role'] == 'system' %}{{ raise_exception('no system turns') }}"
            "{% endif %}{{ message['content'] }}{% endfor %}"
        )
        path = write_jsonl(
            tmp_path / "d.jsonl", {"messages": CONVERSATION[1:3]}, "", {"messages": CONVERSATION}
        )

        with pytest.raises(DatasetValidationError, match="^line 3: .*no system turns"):
            load_examples(path, tokenizer, max_seq_length=512)
        with pytest.raises(DatasetValidationError, match="^line 3: "):
            token_statistics(path, tokenizer, max_seq_length=512)

    def test_refuses_a_template_that_rewrites_earlier_turns(
        self, tmp_path: Path, tokenizer: Any
    ) -> None:
        # Like templates that drop the reasoning of past assistant turns: the conversation so far
        # is not a prefix of the whole one, so the answer's tokens cannot be located.
        tokenizer.chat_template = (
            "{% for message in messages %}{{ message['role'] }}: "
            "{% if message['role'] == 'assistant' and not loop.last %}(answered)"
            "{% else %}{{ message['content'] }}{% endif %}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}"
        )
        path = write_jsonl(tmp_path / "d.jsonl", {"messages": CONVERSATION})

        with pytest.raises(DatasetValidationError, match=r"^line 1: .*messages\[2\]") as raised:
            load_examples(path, tokenizer, max_seq_length=512)
        assert "completion_only_loss" in str(raised.value)

        [example] = load_examples(path, tokenizer, max_seq_length=512, completion_only_loss=False)
        assert "(answered)" in tokenizer.decode(example["input_ids"])
