"""Which layers LoRA adapts by default: the attention and MLP projections of the model's family.

Standard library only: the API reads a model's `config.json` with it, to record on the job
the layers a LoRA run will adapt before the run starts; the trainer applies the same rule to
the model it loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

AUTO = "auto"
ALL_LINEAR = "all-linear"

_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
_GATED_MLP = ["gate_proj", "up_proj", "down_proj"]
# Llama, Mistral, Qwen and Gemma name their layers alike: four attention projections and a
# gated MLP. (Their MoE variants route through experts whose names differ: all-linear there.)
FAMILY_TARGETS: dict[str, list[str]] = dict.fromkeys(
    ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text"),
    _ATTENTION + _GATED_MLP,
)


def targets_for(model_type: str | None) -> list[str] | None:
    """The projections to adapt for a model family, or None when it is not one we know."""
    targets = FAMILY_TARGETS.get(model_type or "")
    return list(targets) if targets is not None else None


def model_type_of(directory: str | Path) -> str | None:
    """`model_type` from a model directory's config.json, or None if it cannot be read."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None


def resolve_targets(requested: list[str] | str | None, model_type: str | None) -> list[str] | str:
    """What peft gets: the list asked for, or for `auto` the family's projections (every
    linear layer for a family not known here); None (older jobs) is every linear layer."""
    if isinstance(requested, list):
        return requested
    if requested == AUTO:
        return targets_for(model_type) or ALL_LINEAR
    return ALL_LINEAR
