"""Dataset validation, tokenization with label masking, and batch padding."""

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
    load_examples,
    validate_dataset,
)

from .builders import REPO_ROOT, SAMPLES_DIR, write_jsonl

PAIR = {"prompt": "What is 1 plus 1?\nAnswer:", "completion": " 2"}
TEXT = {"text": "The cat sat on the mat."}


class TestValidateDataset:
    def test_accepts_the_prompt_completion_sample(self) -> None:
        report = validate_dataset(SAMPLES_DIR / "tiny_sft.jsonl")

        assert report.ok
        assert (report.rows, report.format, report.errors) == (64, "prompt_completion", [])

    def test_accepts_the_text_sample(self) -> None:
        report = validate_dataset(SAMPLES_DIR / "tiny_text.jsonl")

        assert report.ok
        assert (report.rows, report.format) == (64, "text")

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
            ({"text": "x", "prompt": "y", "completion": "z"}, "both 'text' and 'prompt'"),
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
            "ainfinity.train.failures, ainfinity.train.tiny_model; "
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
