"""Tokenize a validated JSONL dataset for training, and measure its token lengths.

Every row is first encoded at full length as `(input_ids, labels)`: text and prompt/completion
rows by `encoding`, chat rows by `chat`. Training cuts the rows to `max_seq_length`; the statistics
measure them before that, from the same encoding, so they describe exactly what training sees.
Like the rest of the dataset code this module imports no torch or transformers at import time.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ainfinity.train.chat import ChatTemplateError, encode_conversations
from ainfinity.train.dataset import (
    CHAT_FORMAT,
    IGNORE_INDEX,
    PREFERENCE_FORMAT,
    PROMPT_COMPLETION_FORMAT,
    TEXT_FORMAT,
    DatasetError,
    DatasetReport,
    DatasetValidationError,
    validate_dataset,
)
from ainfinity.train.encoding import TokenizedRow, encode_prompt_completions, encode_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Tokenizing in batches lets a fast tokenizer use its Rust loop instead of one call per row.
_TOKENIZE_BATCH_ROWS = 1024


@dataclass(frozen=True)
class TokenStats:
    """Token lengths of a dataset's rows as training tokenizes them, measured before truncation."""

    rows: int
    min: int
    mean: float
    p95: int
    max: int
    truncated_rows: int
    """Rows longer than `max_seq_length`, which training cuts."""
    max_seq_length: int

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], max_seq_length: int) -> TokenStats:
        """Summarise full row lengths; p95 is the nearest-rank 95th percentile."""
        if not lengths:
            raise ValueError("no rows to measure")
        ordered = sorted(lengths)
        return cls(
            rows=len(ordered),
            min=ordered[0],
            mean=round(sum(ordered) / len(ordered), 2),
            p95=ordered[math.ceil(0.95 * len(ordered)) - 1],
            max=ordered[-1],
            truncated_rows=len(ordered) - bisect_right(ordered, max_seq_length),
            max_seq_length=max_seq_length,
        )

    def as_dict(self) -> dict[str, int | float]:
        """The statistics as a JSON-ready dict with the field names as keys."""
        return asdict(self)


@dataclass(frozen=True)
class TokenizedDataset:
    """A dataset ready for training: its format, its examples and their token statistics."""

    format: str
    examples: list[dict[str, list[int]]]
    stats: TokenStats


def tokenize_dataset(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_seq_length: int,
    completion_only_loss: bool = True,
) -> TokenizedDataset:
    """Tokenize a dataset once for both `load_examples`' examples and `token_statistics`' stats.

    Rows are cut to `max_seq_length` tokens; rows left without a label are dropped (they teach
    nothing, and a batch of only such rows has a 0/0 loss) but still counted in the statistics.

    Raises:
        DatasetValidationError: the file fails `validate_dataset`, the chat template fails on
            a row, or no row keeps a label.
    """
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2")
    report = _checked_report(path)
    lengths: list[int] = []
    examples: list[dict[str, list[int]]] = []
    for input_ids, labels in _tokenized_rows(path, tokenizer, report, completion_only_loss):
        lengths.append(len(input_ids))
        input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
        if labels.count(IGNORE_INDEX) == len(labels):
            continue
        examples.append(
            {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
        )
    if not examples:
        learnt = "an assistant" if report.format == CHAT_FORMAT else "a completion"
        reason = f"no row has {learnt} token within max_seq_length={max_seq_length}"
        raise DatasetValidationError(
            DatasetReport(report.rows, report.format, [DatasetError(0, reason)])
        )
    stats = TokenStats.from_lengths(lengths, max_seq_length)
    return TokenizedDataset(format=str(report.format), examples=examples, stats=stats)


def load_examples(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_seq_length: int,
    completion_only_loss: bool = True,
) -> list[dict[str, list[int]]]:
    """Tokenize a dataset into `input_ids`, `attention_mask` and `labels`, one dict per row.

    Text rows are `[bos] + text + [eos]`, every token learnt. Prompt/completion rows are
    `[bos] + prompt + completion + [eos]`; chat rows are rendered by the tokenizer's chat template
    (`DEFAULT_CHAT_TEMPLATE` is installed on a tokenizer without one). With
    `completion_only_loss` only the completion plus eos, or the assistant turns with their
    end-of-turn marker, are learnt; the rest is labelled IGNORE_INDEX. See `tokenize_dataset`
    for truncation and errors.
    """
    return tokenize_dataset(
        path,
        tokenizer,
        max_seq_length=max_seq_length,
        completion_only_loss=completion_only_loss,
    ).examples


def token_statistics(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_seq_length: int,
    completion_only_loss: bool = True,
    report: DatasetReport | None = None,
) -> TokenStats:
    """Row count and token lengths of a dataset, tokenized exactly as `load_examples` does it.

    `report`, when the caller already validated the file, saves reading it a second time.

    Raises:
        DatasetValidationError: the file fails `validate_dataset` or the chat template fails.
    """
    if report is None or not report.ok:
        report = _checked_report(path)
    lengths = [
        len(input_ids)
        for input_ids, _ in _tokenized_rows(path, tokenizer, report, completion_only_loss)
    ]
    return TokenStats.from_lengths(lengths, max_seq_length)


def _checked_report(path: str | Path) -> DatasetReport:
    report = validate_dataset(path, max_errors=1)
    if not report.ok:
        raise DatasetValidationError(report)
    return report


def _tokenized_rows(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    report: DatasetReport,
    completion_only_loss: bool,
) -> Iterator[TokenizedRow]:
    """Full-length `(input_ids, labels)` of every row of a validated dataset, in file order."""
    if report.format == PREFERENCE_FORMAT:
        error = DatasetError(0, "preference rows (chosen/rejected answers) are trained with "
                             "method 'dpo'")  # fmt: skip
        raise DatasetValidationError(DatasetReport(report.rows, report.format, [error]))
    for chunk in _chunks(_iter_rows(path), _TOKENIZE_BATCH_ROWS):
        rows = [row for _, row in chunk]
        if report.format == TEXT_FORMAT:
            yield from encode_texts(tokenizer, [row["text"] for row in rows])
        elif report.format == PROMPT_COMPLETION_FORMAT:
            yield from encode_prompt_completions(
                tokenizer,
                [row["prompt"] for row in rows],
                [row["completion"] for row in rows],
                completion_only_loss=completion_only_loss,
            )
        else:
            try:
                yield from encode_conversations(
                    tokenizer,
                    [row["messages"] for row in rows],
                    completion_only_loss=completion_only_loss,
                )
            except ChatTemplateError as exc:
                error = DatasetError(chunk[exc.index][0], exc.reason)
                raise DatasetValidationError(
                    DatasetReport(report.rows, report.format, [error])
                ) from exc


def _iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line number, row)` for the rows of a dataset that has already passed validation."""
    with open(path, "rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            if raw.strip():
                yield line_number, json.loads(raw)


def _chunks(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
