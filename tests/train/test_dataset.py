"""Dataset validation, tokenization with label masking, token statistics, and batch padding."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ainfinity.train.dataset import (
    IGNORE_INDEX,
    CausalLMCollator,
    DatasetError,
    DatasetValidationError,
    validate_dataset,
)
from ainfinity.train.tokenization import (
    TokenStats,
    load_examples,
    token_statistics,
    tokenize_dataset,
)

from .builders import REPO_ROOT, SAMPLES_DIR, write_jsonl

PAIR = {"prompt": "What is 1 plus 1?\nAnswer:", "completion": " 2"}
TEXT = {"text": "The cat sat on the mat."}
CHAT = {
    "messages": [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "What is 1 plus 1?"},
        {"role": "assistant", "content": "2"},
    ]
}


def chat(*messages: Any) -> dict[str, Any]:
    """A chat row from `(role, content)` pairs, or raw message values."""
    return {
        "messages": [
            {"role": m[0], "content": m[1]} if isinstance(m, tuple) else m for m in messages
        ]
    }


class TestValidateDataset:
    def test_accepts_the_prompt_completion_sample(self) -> None:
        report = validate_dataset(SAMPLES_DIR / "tiny_sft.jsonl")

        assert report.ok
        assert (report.rows, report.format, report.errors) == (64, "prompt_completion", [])

    def test_accepts_the_text_sample(self) -> None:
        report = validate_dataset(SAMPLES_DIR / "tiny_text.jsonl")

        assert report.ok
        assert (report.rows, report.format) == (64, "text")

    def test_accepts_the_chat_sample(self) -> None:
        report = validate_dataset(SAMPLES_DIR / "tiny_chat.jsonl")

        assert report.ok
        assert (report.rows, report.format) == (64, "chat")

    def test_skips_blank_lines_and_ignores_extra_keys(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", TEXT, "", "   ", {**TEXT, "id": 7})

        report = validate_dataset(path)

        assert report.ok
        assert report.rows == 2

    @pytest.mark.parametrize(
        ("bad_line", "reason"),
        [
            ("{not json", "invalid JSON"),
            ("[1, 2]", "expected a JSON object, got array"),
            ('"just a string"', "expected a JSON object, got string"),
            ({"prompt": "2 plus 2?"}, "missing field 'completion'"),
            ({"question": "?"}, "missing field 'text'"),
            ({"prompt": "2 plus 2?", "completion": 4}, "field 'completion' must be a string"),
            ({"prompt": " \n", "completion": "4"}, "field 'prompt' is empty"),
            ({"text": "x"}, "mixed formats"),
            (CHAT, "mixed formats: row is 'chat', dataset is 'prompt_completion'"),
            (
                {"text": "x", "prompt": "y", "completion": "z"},
                "row has fields of more than one format: 'text', 'prompt'/'completion'",
            ),
            (
                {**CHAT, "completion": "z"},
                "more than one format: 'prompt'/'completion', 'messages'",
            ),
        ],
    )
    def test_reports_each_error_kind_at_its_line(
        self, tmp_path: Path, bad_line: Any, reason: str
    ) -> None:
        # The blank line counts for numbering but not as a row.
        path = write_jsonl(tmp_path / "d.jsonl", PAIR, "", bad_line, PAIR)

        report = validate_dataset(path)

        assert not report.ok
        assert report.format == "prompt_completion"
        assert report.rows == 3
        assert [error.line for error in report.errors] == [3]
        assert reason in report.errors[0].reason

    @pytest.mark.parametrize(
        ("bad_row", "reason"),
        [
            (
                {"messages": []},
                "field 'messages' must be a non-empty array of messages, got an empty array",
            ),
            (
                {"messages": "hi"},
                "field 'messages' must be a non-empty array of messages, got string",
            ),
            (chat(("user", "hi"), "hello"), "messages[1]: expected a JSON object, got string"),
            (chat({"content": "hi"}), "messages[0]: missing field 'role'"),
            (chat({"role": "user"}), "messages[0]: missing field 'content'"),
            (
                chat(("user", "hi"), ("assistant", None)),
                "messages[1]: field 'content' must be a string, got null",
            ),
            (
                chat(("user", "hi"), ("assistant", [{"text": "x"}])),
                "messages[1]: field 'content' must be a string, got array",
            ),
            (chat((7, "hi")), "messages[0]: field 'role' must be a string, got number"),
            (chat(("user", " \n"), ("assistant", "x")), "messages[0]: field 'content' is empty"),
            (
                chat(("user", "hi"), ("tool", "{}"), ("assistant", "x")),
                "messages[1]: unknown role 'tool' (expected one of system, user, assistant)",
            ),
            (chat(("system", "be kind"), ("user", "hi")), "conversation has no assistant turn"),
        ],
    )
    def test_reports_each_chat_error_kind_at_its_line(
        self, tmp_path: Path, bad_row: Any, reason: str
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", CHAT, bad_row, CHAT)

        report = validate_dataset(path)

        assert report.format == "chat"
        assert [error.line for error in report.errors] == [2]
        assert report.errors[0].reason.startswith(reason)

    def test_reports_invalid_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "d.jsonl"
        path.write_bytes(json.dumps(TEXT).encode() + b'\n{"text": "caf\xe9"}\n')

        assert validate_dataset(path).errors == [DatasetError(2, "not valid UTF-8")]

    def test_takes_the_format_from_the_first_valid_row(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"prompt": "only a prompt"}, TEXT, PAIR)

        report = validate_dataset(path)

        assert report.format == "text"
        assert [error.line for error in report.errors] == [1, 3]
        assert "mixed formats" in report.errors[1].reason

    def test_stops_collecting_at_max_errors_but_counts_every_row(self, tmp_path: Path) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", *(["nope"] * 10), *([TEXT] * 5))

        report = validate_dataset(path, max_errors=3)

        assert [error.line for error in report.errors] == [1, 2, 3]
        assert report.rows == 15

    @pytest.mark.parametrize("content", ["", "\n  \n\n"])
    def test_rejects_a_file_without_rows(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "d.jsonl"
        path.write_text(content, encoding="utf-8")

        report = validate_dataset(path)

        assert (report.rows, report.format) == (0, None)
        assert report.errors == [DatasetError(0, "dataset has no rows")]

    def test_reports_a_missing_file_instead_of_raising(self, tmp_path: Path) -> None:
        report = validate_dataset(tmp_path / "absent.jsonl")

        assert [error.line for error in report.errors] == [0]
        assert "cannot read dataset" in report.errors[0].reason

    def test_validates_100k_rows_quickly(self, tmp_path: Path) -> None:
        path = tmp_path / "big.jsonl"
        path.write_text((json.dumps(PAIR) + "\n") * 100_000, encoding="utf-8")

        started = time.perf_counter()
        report = validate_dataset(path)
        elapsed = time.perf_counter() - started

        assert report.ok and report.rows == 100_000
        assert elapsed < 5.0, f"took {elapsed:.2f}s"

    def test_light_modules_import_without_torch(self) -> None:
        # The API server imports these at request time; torch would add seconds and gigabytes.
        code = (
            "import sys, ainfinity.train.dataset, ainfinity.train.protocol, "
            "ainfinity.train.job_config, ainfinity.train.deepspeed_configs, "
            "ainfinity.train.failures, ainfinity.train.tiny_model, ainfinity.train.chat, "
            "ainfinity.train.encoding, ainfinity.train.packing, ainfinity.train.tokenization; "
            "from ainfinity.train.dataset import load_examples, pack_examples, TokenStats; "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


class TestLoadExamples:
    def ids(self, tokenizer: Any, text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def test_masks_bos_and_prompt_and_learns_completion_plus_eos(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"prompt": "1+1=", "completion": "2"})

        [example] = load_examples(path, byte_tokenizer, max_seq_length=64)

        bos, eos = byte_tokenizer.bos_token_id, byte_tokenizer.eos_token_id
        prompt, completion = self.ids(byte_tokenizer, "1+1="), self.ids(byte_tokenizer, "2")
        assert len(prompt) == 4 and len(completion) == 1
        assert example["input_ids"] == [bos, *prompt, *completion, eos]
        assert example["labels"] == [IGNORE_INDEX] * 5 + [*completion, eos]
        assert example["attention_mask"] == [1] * 7

    def test_learns_every_text_token(self, tmp_path: Path, byte_tokenizer: Any) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"text": "hi there"})

        [example] = load_examples(path, byte_tokenizer, max_seq_length=64)

        body = self.ids(byte_tokenizer, "hi there")
        expected = [byte_tokenizer.bos_token_id, *body, byte_tokenizer.eos_token_id]
        assert example["input_ids"] == expected
        assert example["labels"] == expected

    def test_truncates_to_max_seq_length(self, tmp_path: Path, byte_tokenizer: Any) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"prompt": "abc", "completion": "defgh"})

        [example] = load_examples(path, byte_tokenizer, max_seq_length=6)

        assert len(example["input_ids"]) == len(example["labels"]) == 6
        assert example["labels"][:4] == [IGNORE_INDEX] * 4
        assert example["labels"][4:] == self.ids(byte_tokenizer, "de")

    def test_drops_rows_whose_completion_is_cut_away(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        long_prompt = {"prompt": "x" * 20, "completion": "y"}
        path = write_jsonl(tmp_path / "d.jsonl", long_prompt, {"prompt": "a", "completion": "b"})

        examples = load_examples(path, byte_tokenizer, max_seq_length=8)

        assert len(examples) == 1

    def test_rejects_a_dataset_where_no_row_keeps_a_label(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"prompt": "x" * 20, "completion": "y"})

        with pytest.raises(DatasetValidationError, match="max_seq_length=8"):
            load_examples(path, byte_tokenizer, max_seq_length=8)

    def test_names_the_first_bad_line(self, tmp_path: Path, byte_tokenizer: Any) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", TEXT, TEXT, "{oops", {"text": ""})

        with pytest.raises(DatasetValidationError, match=r"^line 3: invalid JSON") as raised:
            load_examples(path, byte_tokenizer, max_seq_length=64)

        assert raised.value.report.errors[0].line == 3

    def test_learns_prompt_tokens_too_without_completion_only_loss(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", {"prompt": "1+1=", "completion": "2"})

        [example] = load_examples(
            path, byte_tokenizer, max_seq_length=64, completion_only_loss=False
        )

        assert example["labels"] == example["input_ids"]
        assert byte_tokenizer.decode(example["input_ids"]) == "<s>1+1=2</s>"

    def test_stays_importable_from_the_dataset_module(self) -> None:
        from ainfinity.train import dataset, packing

        assert dataset.load_examples is load_examples
        assert dataset.pack_examples is packing.pack_examples
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            _ = dataset.nonexistent


class TestTokenStatistics:
    def test_measures_full_lengths_and_counts_rows_cut_by_max_seq_length(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        # A text row of n bytes is n + 2 tokens (bos, eos): lengths 3 to 22.
        path = write_jsonl(tmp_path / "d.jsonl", *({"text": "a" * n} for n in range(1, 21)))

        stats = token_statistics(path, byte_tokenizer, max_seq_length=20)

        assert stats == TokenStats(
            rows=20, min=3, mean=12.5, p95=21, max=22, truncated_rows=2, max_seq_length=20
        )
        assert stats.as_dict() == {
            "rows": 20,
            "min": 3,
            "mean": 12.5,
            "p95": 21,
            "max": 22,
            "truncated_rows": 2,
            "max_seq_length": 20,
        }

    @pytest.mark.parametrize("sample", ["tiny_text.jsonl", "tiny_sft.jsonl", "tiny_chat.jsonl"])
    def test_measures_the_rows_that_training_gets(self, byte_tokenizer: Any, sample: str) -> None:
        tokenizer = copy.deepcopy(byte_tokenizer)
        path = SAMPLES_DIR / sample
        uncut = tokenize_dataset(path, tokenizer, max_seq_length=4096).examples
        lengths = sorted(len(example["input_ids"]) for example in uncut)
        limit = lengths[len(lengths) // 2]

        stats = token_statistics(path, tokenizer, max_seq_length=limit)

        assert stats == TokenStats.from_lengths(lengths, limit)
        assert (stats.rows, stats.min, stats.max) == (64, lengths[0], lengths[-1])
        assert stats.truncated_rows == sum(1 for n in lengths if n > limit) > 0
        # Loading at the limit tokenizes the same way and reports the same statistics.
        assert tokenize_dataset(path, tokenizer, max_seq_length=limit).stats == stats

    def test_measures_chat_rows_as_their_rendered_conversation(
        self, tmp_path: Path, byte_tokenizer: Any
    ) -> None:
        tokenizer = copy.deepcopy(byte_tokenizer)
        rows = [CHAT, chat(("user", "Say something long."), ("assistant", "x" * 50))]
        path = write_jsonl(tmp_path / "d.jsonl", *rows)

        stats = token_statistics(path, tokenizer, max_seq_length=100)

        rendered = [tokenizer.apply_chat_template(row["messages"], tokenize=False) for row in rows]
        lengths = sorted(len(self.ids(tokenizer, text)) for text in rendered)
        assert (stats.min, stats.max) == (lengths[0], lengths[1])
        assert stats.truncated_rows == 1 and lengths[0] <= 100 < lengths[1]

    def test_refuses_an_invalid_dataset(self, tmp_path: Path, byte_tokenizer: Any) -> None:
        path = write_jsonl(tmp_path / "d.jsonl", CHAT, chat(("user", "hi")))

        with pytest.raises(DatasetValidationError, match="^line 2: conversation has no assistant"):
            token_statistics(path, byte_tokenizer, max_seq_length=64)

    def ids(self, tokenizer: Any, text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class TestCausalLMCollator:
    def test_pads_to_the_longest_row_of_the_batch(self, byte_tokenizer: Any) -> None:
        collate = CausalLMCollator.for_tokenizer(byte_tokenizer)
        pad = byte_tokenizer.pad_token_id
        short = {"input_ids": [5, 6], "attention_mask": [1, 1], "labels": [-100, 6]}
        long = {"input_ids": [7, 8, 9, 10], "attention_mask": [1] * 4, "labels": [7, 8, 9, 10]}

        batch = collate([short, long])

        assert batch["input_ids"].tolist() == [[5, 6, pad, pad], [7, 8, 9, 10]]
        assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
        assert batch["labels"].tolist() == [[-100, 6, -100, -100], [7, 8, 9, 10]]
        assert str(batch["input_ids"].dtype) == "torch.int64"

    def test_falls_back_to_eos_when_the_tokenizer_has_no_pad(self, byte_tokenizer: Any) -> None:
        tokenizer = copy.deepcopy(byte_tokenizer)
        tokenizer.pad_token = None

        collate = CausalLMCollator.for_tokenizer(tokenizer)

        assert tokenizer.pad_token_id is None
        assert collate.pad_token_id == tokenizer.eos_token_id
