"""A dataset's token lengths, measured for the control plane with the job's own tokenizer.

The API process never imports transformers: it asks the worker, which has it loaded anyway.
Tokenizers come from the built-in, a model directory, or the local hub cache only (never a
download); the trainer measures hub models the server does not have.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("ainfinity.worker")

# Held while loading a tokenizer and while using one: a fast tokenizer's settings change per
# call, and transformers' lazy imports are not thread-safe on first use.
_LOCK = threading.Lock()


class TokenStatsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    tokenizer: str = Field(description="A built-in name, a directory, or a hub id.")
    max_seq_length: int = Field(ge=1)
    completion_only_loss: bool = True


class TokenStatsResult(BaseModel):
    status: Literal["measured", "unavailable", "invalid"]
    reason: str | None = None
    min: int | None = None
    mean: float | None = None
    p95: int | None = None
    max: int | None = None
    truncated_rows: int | None = None


@lru_cache(maxsize=8)
def _tokenizer(name: str) -> PreTrainedTokenizerBase | None:
    from transformers import AutoTokenizer

    from ainfinity.train.builtin_models import SMOLLM2_NAME, builtin_directory
    from ainfinity.train.failures import ModelLoadError
    from ainfinity.train.tiny_model import TINY_MODEL_NAME, build_byte_tokenizer

    if name == TINY_MODEL_NAME:
        return build_byte_tokenizer()
    if name == SMOLLM2_NAME:
        try:
            name = str(builtin_directory(name))
        except ModelLoadError as exc:
            logger.info("no tokenizer for %s: %s", SMOLLM2_NAME, exc)
            return None

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, ImportError, KeyError, TypeError) as exc:
        logger.info("no local tokenizer for %s: %s", name, exc)
        return None


def measure(request: TokenStatsRequest) -> TokenStatsResult:
    """Blocking: reads and tokenizes the whole file."""
    from ainfinity.train.dataset import DatasetValidationError
    from ainfinity.train.tokenization import token_statistics

    with _LOCK:
        tokenizer = _tokenizer(request.tokenizer)
        if tokenizer is None:
            return TokenStatsResult(
                status="unavailable", reason="the tokenizer is not on this server"
            )
        try:
            stats: Any = token_statistics(
                request.dataset,
                tokenizer,
                max_seq_length=request.max_seq_length,
                completion_only_loss=request.completion_only_loss,
            )
        except DatasetValidationError as exc:
            return TokenStatsResult(status="invalid", reason=str(exc))
        except (OSError, UnicodeDecodeError) as exc:
            return TokenStatsResult(status="unavailable", reason=f"cannot read the dataset: {exc}")
    return TokenStatsResult(
        status="measured",
        min=stats.min,
        mean=round(stats.mean, 2),
        p95=stats.p95,
        max=stats.max,
        truncated_rows=stats.truncated_rows,
    )
