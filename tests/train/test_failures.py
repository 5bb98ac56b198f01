"""Which failures get which `ainfinity-error` code, checked on the real exception types."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ainfinity.train.dataset import DatasetError, DatasetReport, DatasetValidationError
from ainfinity.train.failures import (
    MAX_MESSAGE_CHARS,
    InvalidValidationDataset,
    ModelLoadError,
    NonFiniteLossError,
    error_code,
    short_message,
)
from ainfinity.train.model_loading import load_model_and_tokenizer, resolve_attn_implementation
from ainfinity.train.protocol import ErrorCode


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            DatasetValidationError(
                DatasetReport(0, None, [DatasetError(0, "dataset has no rows")])
            ),
            ErrorCode.INVALID_DATASET,
        ),
        (InvalidValidationDataset("line 2: invalid JSON"), ErrorCode.INVALID_DATASET),
        (ModelLoadError("gone"), ErrorCode.MODEL_LOAD_ERROR),
        (NonFiniteLossError(4, float("nan")), ErrorCode.NAN_LOSS),
        (torch.cuda.OutOfMemoryError("CUDA out of memory."), ErrorCode.CUDA_OOM),
        (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled"), ErrorCode.NCCL_ERROR),
        (ValueError("something else"), None),
    ],
)
def test_maps_each_failure_to_its_code(exc: BaseException, code: ErrorCode | None) -> None:
    assert error_code(exc) == code


def test_finds_nccl_in_the_cause_of_a_wrapped_error() -> None:
    try:
        try:
            raise RuntimeError("NCCL communicator was aborted")
        except RuntimeError as inner:
            raise ValueError("step failed") from inner
    except ValueError as outer:
        assert error_code(outer) == ErrorCode.NCCL_ERROR


def test_short_message_is_one_bounded_line() -> None:
    message = short_message(RuntimeError("first\nsecond " + "x" * 2000))

    assert "\n" not in message
    assert message.startswith("first second")
    assert len(message) == MAX_MESSAGE_CHARS


def test_a_missing_model_directory_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model_and_tokenizer(str(tmp_path / "no-such-model"), seed=0)


def test_auto_attention_is_sdpa_without_a_gpu() -> None:
    assert not torch.cuda.is_available()
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


def test_attention_the_machine_lacks_is_a_model_load_error() -> None:
    # flash-attn is neither installed here nor usable without a GPU.
    with pytest.raises(ModelLoadError, match="flash_attention_2"):
        load_model_and_tokenizer(
            "tiny-random-llama", seed=0, attn_implementation="flash_attention_2"
        )
