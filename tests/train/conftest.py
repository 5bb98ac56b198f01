"""Shared fixtures for the training tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def byte_tokenizer() -> Any:
    """The tiny model's tokenizer, built once: importing transformers costs seconds."""
    from ainfinity.train.tiny_model import build_byte_tokenizer

    return build_byte_tokenizer()
