"""A dataset's size and token lengths, measured at launch with the job's own tokenizer.

The trainer tokenizes exactly the same way (`ainfinity.train` does both), so what the API shows
is what training will see: how long the rows are and how many `max_seq_length` cuts.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from ainfinity.exceptions import InvalidDataset
from ainfinity.jobs.inputs import BUILTIN_MODELS, ResolvedDataset
from ainfinity.schema.job import DatasetStats, Hyperparameters

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("ainfinity.service")

# Held while loading a tokenizer and while using one: transformers' lazy imports are not
# thread-safe (concurrent first imports fail), and a fast tokenizer's settings are mutated per
# call, so one instance must not serve two threads.
_TOKENIZE_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _tokenizer(model: str) -> PreTrainedTokenizerBase | None:
    """The model's tokenizer, from the built-in, its directory or the local hub cache only."""
    if model in BUILTIN_MODELS:
        from ainfinity.train.tiny_model import build_byte_tokenizer

        return build_byte_tokenizer()
    from transformers import AutoTokenizer

    try:
        # Never reach a hub from the API server; a hub model not cached here is measured on the
        # node instead (the trainer prints its `ainfinity-dataset` line).
        return AutoTokenizer.from_pretrained(model, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, ImportError, KeyError, TypeError) as exc:
        # A broken tokenizer is the trainer's to report (model_load_error), with its traceback.
        logger.info("no local tokenizer for %s: %s", model, exc)
        return None


def describe_dataset(
    dataset: ResolvedDataset, *, model: str, hyperparameters: Hyperparameters
) -> DatasetStats | None:
    """Rows and format always; token lengths when the tokenizer is at hand. None for a bucket."""
    report = dataset.report
    if report is None:
        return None
    stats = DatasetStats(
        rows=report.rows, format=report.format, max_seq_length=hyperparameters.max_seq_length
    )
    from ainfinity.train.dataset import DatasetValidationError
    from ainfinity.train.tokenization import token_statistics

    with _TOKENIZE_LOCK:
        tokenizer = _tokenizer(model)
        if tokenizer is None:
            return stats
        try:
            tokens = token_statistics(
                dataset.location,
                tokenizer,
                max_seq_length=hyperparameters.max_seq_length,
                completion_only_loss=hyperparameters.completion_only_loss,
                report=report,
            )
        except DatasetValidationError as exc:
            raise InvalidDataset(
                f"Dataset {dataset.location!r} cannot be trained on: {exc}"
            ) from None
    return stats.model_copy(
        update={
            "token_min": tokens.min,
            "token_mean": round(tokens.mean, 2),
            "token_p95": tokens.p95,
            "token_max": tokens.max,
            "truncated_rows": tokens.truncated_rows,
        }
    )
