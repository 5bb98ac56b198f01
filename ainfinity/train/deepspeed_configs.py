"""Where the packaged DeepSpeed and accelerate config files for each ZeRO setting live.

The files sit next to this module (`config/`), so the lookup works from a source checkout and
from an installed wheel alike. Their batch-size, clipping and precision values are `"auto"`:
the HF Trainer fills them in from its arguments, so one file serves every job size.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "config"
DEEPSPEED_CONFIG_DIR = CONFIG_DIR / "ds_config"
ACCELERATE_CONFIG_DIR = CONFIG_DIR / "accelerate"


def _config_stem(zero_stage: int, offload: bool) -> str:
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    if offload and zero_stage < 2:
        raise ValueError(f"CPU offload needs ZeRO stage 2 or 3, got stage {zero_stage}")
    return f"zero{zero_stage}_offload" if offload else f"zero{zero_stage}"


def deepspeed_config_path(zero_stage: int, offload: bool = False) -> Path:
    """Return the DeepSpeed JSON config for a ZeRO stage, with or without CPU offload.

    Raises:
        ValueError: an unknown stage, or offload below stage 2.
    """
    return DEEPSPEED_CONFIG_DIR / f"{_config_stem(zero_stage, offload)}.json"


def accelerate_config_path(zero_stage: int, offload: bool = False) -> Path:
    """Return the `accelerate launch --config_file` YAML for a ZeRO setting.

    Only ZeRO-2, ZeRO-3 and ZeRO-3 with offload have one; the trainer's `--deepspeed` flag
    (under `torchrun` or `accelerate launch`) covers every setting without it.

    Raises:
        ValueError: the setting is invalid or has no accelerate config.
    """
    path = ACCELERATE_CONFIG_DIR / f"{_config_stem(zero_stage, offload)}.yaml"
    if not path.is_file():
        raise ValueError(f"no accelerate config for zero_stage={zero_stage}, offload={offload}")
    return path
