"""JSONL training data: the formats, their validation, and the padding collator.

Rows are `{"text": ...}`, `{"prompt": ..., "completion": ...}`,
`{"messages": [{"role": ..., "content": ...}, ...]}` (an assistant message may carry
`"weight": 0`: that turn is context, not learnt) or, for DPO, OpenAI's preference rows
(`preference`), one format per file; other keys are ignored. The API server imports this
module to validate a dataset when a job is submitted, so it needs only the standard library;
torch is imported inside the collator.

Turning a file into examples lives in `tokenization` (rows are encoded by `encoding`, chat
rows by `chat`) and packing in `packing`. Those modules import this one, so their public names
are re-exported here lazily (PEP 562): `from ainfinity.train.dataset import load_examples`
keeps working, without a cycle and without importing anything heavy before it is asked for.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ainfinity.train.preference import PREFERENCE_FIELDS, PREFERENCE_FORMAT, preference_error

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from ainfinity.train.chat import DEFAULT_CHAT_TEMPLATE, ensure_chat_template
    from ainfinity.train.packing import PackedRowsCollator, PaddingFreeCollator, pack_examples
    from ainfinity.train.tokenization import (
        TokenizedDataset,
        TokenStats,
        load_examples,
        token_statistics,
        tokenize_dataset,
    )

_LAZY_EXPORTS = {
    "DEFAULT_CHAT_TEMPLATE": "ainfinity.train.chat",
    "ensure_chat_template": "ainfinity.train.chat",
    "PaddingFreeCollator": "ainfinity.train.packing",
    "PackedRowsCollator": "ainfinity.train.packing",
    "pack_examples": "ainfinity.train.packing",
    "TokenizedDataset": "ainfinity.train.tokenization",
    "TokenStats": "ainfinity.train.tokenization",
    "load_examples": "ainfinity.train.tokenization",
    "token_statistics": "ainfinity.train.tokenization",
    "tokenize_dataset": "ainfinity.train.tokenization",
}

__all__ = [
    "CHAT_FORMAT",
    "CHAT_ROLES",
    "DEFAULT_CHAT_TEMPLATE",
    "FORMAT_FIELDS",
    "IGNORE_INDEX",
    "PREFERENCE_FORMAT",
    "PROMPT_COMPLETION_FORMAT",
    "TEXT_FORMAT",
    "CausalLMCollator",
    "DatasetError",
    "DatasetReport",
    "DatasetValidationError",
    "PaddingFreeCollator",
    "PackedRowsCollator",
    "TokenStats",
    "TokenizedDataset",
    "ensure_chat_template",
    "load_examples",
    "pack_examples",
    "token_statistics",
    "tokenize_dataset",
    "validate_dataset",
]

TEXT_FORMAT = "text"
PROMPT_COMPLETION_FORMAT = "prompt_completion"
CHAT_FORMAT = "chat"
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    TEXT_FORMAT: ("text",),
    PROMPT_COMPLETION_FORMAT: ("prompt", "completion"),
    CHAT_FORMAT: ("messages",),
    PREFERENCE_FORMAT: PREFERENCE_FIELDS,
}
CHAT_ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100
"""Label value that the loss skips (PyTorch's `CrossEntropyLoss` default)."""


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
    """A dataset that cannot be trained on: `validate_dataset` rejects it, or tokenizing does."""

    def __init__(self, report: DatasetReport) -> None:
        first = report.errors[0]
        where = f"line {first.line}" if first.line else "dataset"
        more = len(report.errors) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}: {first.reason}{suffix}")
        self.report = report


def _field_names(row_format: str) -> str:
    return "/".join(repr(name) for name in FORMAT_FIELDS[row_format])


def _row_error(row: Any, expected_format: str | None) -> tuple[str | None, str | None]:
    """Return `(row_format, reason)`; `reason` is None for a valid row."""
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {_json_type(row)}"
    present = [fmt for fmt, names in FORMAT_FIELDS.items() if any(name in row for name in names)]
    if not present:
        return None, (
            "missing field 'text' (or 'prompt' and 'completion', or 'messages', or 'input' and "
            "'preferred_output' and 'non_preferred_output')"
        )
    if len(present) > 1:
        names = ", ".join(_field_names(fmt) for fmt in present)
        return None, f"row has fields of more than one format: {names}"
    row_format = present[0]
    if expected_format is not None and row_format != expected_format:
        return row_format, f"mixed formats: row is {row_format!r}, dataset is {expected_format!r}"
    if row_format == CHAT_FORMAT:
        return row_format, _conversation_error(row["messages"])
    if row_format == PREFERENCE_FORMAT:
        return row_format, preference_error(row)
    for name in FORMAT_FIELDS[row_format]:
        reason = _string_field_error(row, name)
        if reason is not None:
            return row_format, reason
    return row_format, None


def _string_field_error(obj: dict[str, Any], name: str) -> str | None:
    if name not in obj:
        return f"missing field {name!r}"
    value = obj[name]
    if not isinstance(value, str):
        return f"field {name!r} must be a string, got {_json_type(value)}"
    if not value.strip():
        return f"field {name!r} is empty"
    return None


def _conversation_error(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        got = "an empty array" if isinstance(messages, list) else _json_type(messages)
        return f"field 'messages' must be a non-empty array of messages, got {got}"
    has_assistant = False
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return f"{where}: expected a JSON object, got {_json_type(message)}"
        for name in ("role", "content"):
            reason = _string_field_error(message, name)
            if reason is not None:
                return f"{where}: {reason}"
        role = message["role"]
        if role not in CHAT_ROLES:
            return f"{where}: unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})"
        weight = message.get("weight", 1)
        if "weight" in message and (role != "assistant" or weight not in (0, 1)):
            return f"{where}: 'weight' is 0 or 1, on assistant messages only"
        has_assistant = has_assistant or (role == "assistant" and weight == 1)
    if not has_assistant:
        return "conversation has no assistant turn to learn (none, or all of weight 0)"
    return None


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

    The format is the first valid row's; after `max_errors` errors the remaining lines are only
    counted, not parsed.
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
