"""JSONL training data: validate it, tokenize it, and pad batches of it.

Rows are either `{"text": ...}` or `{"prompt": ..., "completion": ...}`; other keys are ignored.
The API server imports this module to validate a dataset when a job is submitted, so torch and
transformers are only imported inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

TEXT_FORMAT = "text"
PROMPT_COMPLETION_FORMAT = "prompt_completion"
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    TEXT_FORMAT: ("text",),
    PROMPT_COMPLETION_FORMAT: ("prompt", "completion"),
}
IGNORE_INDEX = -100
"""Label value that the loss skips (PyTorch's `CrossEntropyLoss` default)."""

# Tokenizing in batches lets a fast tokenizer use its Rust loop instead of one call per row.
_TOKENIZE_BATCH_ROWS = 1024


@dataclass(frozen=True)
class DatasetError:
    """One problem in a dataset file; `line` is 1-based, 0 for the file as a whole."""

    line: int
    reason: str


@dataclass(frozen=True)
class DatasetReport:
    """What `validate_dataset` found: non-blank rows, detected format, first errors."""

    rows: int
    format: str | None
    errors: list[DatasetError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the dataset can be trained on."""
        return not self.errors


class DatasetValidationError(ValueError):
    """Raised by `load_examples` for a dataset that `validate_dataset` rejects."""

    def __init__(self, report: DatasetReport) -> None:
        first = report.errors[0]
        where = f"line {first.line}" if first.line else "dataset"
        more = len(report.errors) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}: {first.reason}{suffix}")
        self.report = report


def _row_error(row: Any, expected_format: str | None) -> tuple[str | None, str | None]:
    """Return `(row_format, reason)`; `reason` is None for a valid row."""
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {_json_type(row)}"
    has_text = "text" in row
    has_pair = "prompt" in row or "completion" in row
    if has_text and has_pair:
        return None, "row has both 'text' and 'prompt'/'completion' fields"
    if not has_text and not has_pair:
        return None, "missing field 'text' (or 'prompt' and 'completion')"
    row_format = TEXT_FORMAT if has_text else PROMPT_COMPLETION_FORMAT
    if expected_format is not None and row_format != expected_format:
        return row_format, f"mixed formats: row is {row_format!r}, dataset is {expected_format!r}"
    for name in FORMAT_FIELDS[row_format]:
        if name not in row:
            return row_format, f"missing field {name!r}"
        value = row[name]
        if not isinstance(value, str):
            return row_format, f"field {name!r} must be a string, got {_json_type(value)}"
        if not value.strip():
            return row_format, f"field {name!r} is empty"
    return row_format, None


def _json_type(value: Any) -> str:
    """Name a decoded JSON value's type the way a JSON author would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def validate_dataset(path: str | Path, *, max_errors: int = 5) -> DatasetReport:
    """Check a JSONL dataset line by line without loading it whole.

    After `max_errors` errors the remaining lines are only counted, not parsed.
    """
    rows = 0
    dataset_format: str | None = None
    errors: list[DatasetError] = []
    try:
        with open(path, "rb") as lines:
            for line_number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                rows += 1
                if len(errors) >= max_errors:
                    continue
                try:
                    row = json.loads(raw)
                except UnicodeDecodeError:
                    errors.append(DatasetError(line_number, "not valid UTF-8"))
                    continue
                except json.JSONDecodeError as exc:
                    errors.append(DatasetError(line_number, f"invalid JSON: {exc.msg}"))
                    continue
                row_format, reason = _row_error(row, dataset_format)
                if reason is not None:
                    errors.append(DatasetError(line_number, reason))
                elif dataset_format is None:
                    dataset_format = row_format
    except OSError as exc:
        return DatasetReport(0, None, [DatasetError(0, f"cannot read dataset: {exc.strerror}")])
    if rows == 0:
        errors.append(DatasetError(0, "dataset has no rows"))
    return DatasetReport(rows=rows, format=dataset_format, errors=errors)


def _iter_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """Yield the decoded rows of a dataset that has already passed validation."""
    with open(path, "rb") as lines:
        for raw in lines:
            if raw.strip():
                yield json.loads(raw)


def _chunks(rows: Iterator[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    chunk: list[dict[str, str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_examples(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, *, max_seq_length: int
) -> list[dict[str, list[int]]]:
    """Tokenize a dataset into `input_ids`, `attention_mask` and `labels`, one dict per row.

    A row is `[bos] + prompt + completion + [eos]` (bos only when the tokenizer has one), cut to
    `max_seq_length` tokens. Text rows learn every token; prompt/completion rows mask the bos and
    prompt with -100, so the loss covers the completion only. Rows whose completion is cut away
    entirely are dropped: they teach nothing, and a batch of only such rows has a 0/0 loss.

    Raises:
        DatasetValidationError: the file fails `validate_dataset`, or no row keeps a label.
    """
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2")
    report = validate_dataset(path, max_errors=1)
    if not report.ok:
        raise DatasetValidationError(report)
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token")

    is_text = report.format == TEXT_FORMAT
    examples: list[dict[str, list[int]]] = []
    for chunk in _chunks(_iter_rows(path), _TOKENIZE_BATCH_ROWS):
        if is_text:
            prompts: list[list[int]] = [[] for _ in chunk]
            targets = _encode(tokenizer, [row["text"] for row in chunk])
        else:
            prompts = _encode(tokenizer, [row["prompt"] for row in chunk])
            targets = _encode(tokenizer, [row["completion"] for row in chunk])
        for prompt_ids, target_ids in zip(prompts, targets, strict=True):
            if is_text:
                masked, learned = [], prefix + target_ids + [eos]
            else:
                masked, learned = prefix + prompt_ids, target_ids + [eos]
            input_ids = (masked + learned)[:max_seq_length]
            labels = ([IGNORE_INDEX] * len(masked) + learned)[:max_seq_length]
            if all(label == IGNORE_INDEX for label in labels):
                continue
            examples.append(
                {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
            )
    if not examples:
        reason = f"no row has a completion token within max_seq_length={max_seq_length}"
        raise DatasetValidationError(
            DatasetReport(report.rows, report.format, [DatasetError(0, reason)])
        )
    return examples


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    # Special tokens are placed by hand above; letting the tokenizer add its own would double them.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(ids) for ids in encoded]


@dataclass(frozen=True)
class CausalLMCollator:
    """Pad a batch of `load_examples` rows on the right to the batch's longest row."""

    pad_token_id: int

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> CausalLMCollator:
        """Use the tokenizer's pad token, or its eos token when it has none (Llama's case)."""
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        return cls(pad_token_id=pad)

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Return `input_ids`, `attention_mask` and `labels` as `(batch, longest)` tensors."""
        import torch

        longest = max(len(row["input_ids"]) for row in features)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        return {
            key: torch.tensor(
                [row[key] + [pad] * (longest - len(row[key])) for row in features],
                dtype=torch.long,
            )
            for key, pad in pads.items()
        }
