"""Failures the trainer recognises, and the error code the control plane gets for each.

Torch is never imported here: a failure that happens before torch loads cannot be a CUDA one.
"""

from __future__ import annotations

import sys

from ainfinity.train.dataset import DatasetValidationError
from ainfinity.train.protocol import ErrorCode

# Keeps an `ainfinity-error` line readable in a job list; the traceback has the rest.
MAX_MESSAGE_CHARS = 500


class ModelLoadError(RuntimeError):
    """The model or tokenizer named in the job config could not be loaded."""


class InvalidValidationDataset(ValueError):
    """The validation dataset cannot be used: invalid rows, or another format than the dataset."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"validation_dataset: {reason}")


class NonFiniteLossError(RuntimeError):
    """A logged training loss was NaN or infinite: training diverged."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at step {step}; try a lower learning rate")
        self.step = step
        self.loss = loss


def _is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # Some DeepSpeed and NCCL paths re-raise an OOM as a plain RuntimeError.
    return "CUDA out of memory" in str(exc)


def _mentions_nccl(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if "nccl" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def error_code(exc: BaseException) -> ErrorCode | None:
    """Return the code for a recognised failure, or None for one the control plane calls unknown."""
    if isinstance(exc, DatasetValidationError | InvalidValidationDataset):
        return ErrorCode.INVALID_DATASET
    if isinstance(exc, ModelLoadError):
        return ErrorCode.MODEL_LOAD_ERROR
    if isinstance(exc, NonFiniteLossError):
        return ErrorCode.NAN_LOSS
    if _is_cuda_oom(exc):
        return ErrorCode.CUDA_OOM
    if _mentions_nccl(exc):
        return ErrorCode.NCCL_ERROR
    return None


def short_message(exc: BaseException) -> str:
    """The exception's text, trimmed to one readable line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text
