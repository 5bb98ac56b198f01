"""Load the model and tokenizer a job names, and wrap the model in LoRA adapters when asked.

`model` is a built-in (`tiny-random-llama`, `smollm2-135m-instruct`), a local directory, or a
hub id (downloaded on the node at run time). Code shipped inside a model repository is never run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ainfinity.train.builtin_models import SMOLLM2_NAME, builtin_directory
from ainfinity.train.failures import ModelLoadError
from ainfinity.train.lora_targets import resolve_targets
from ainfinity.train.tiny_model import TINY_MODEL_NAME, build_tiny_random_llama

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ainfinity.train.job_config import LoraSettings

MERGED_DIR_NAME = "merged"


def resolve_attn_implementation(requested: str) -> str:
    """`auto` is flash_attention_2 on a GPU when `flash_attn` is installed, else sdpa."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model_and_tokenizer(
    name: str,
    *,
    seed: int,
    attn_implementation: str = "sdpa",
    dtype: Any = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the tiny test model, or load a local directory or hub id with `from_pretrained`.

    `dtype` defaults to float32: full-precision master weights, with bf16 compute left to the
    Trainer (or DeepSpeed). `seed` only matters for the tiny model, whose weights it draws.
    """
    import torch

    if name == SMOLLM2_NAME:
        name = str(builtin_directory(name))
    if name == TINY_MODEL_NAME:
        tiny, tiny_tokenizer = build_tiny_random_llama(seed)
        try:
            tiny.set_attn_implementation(attn_implementation)
        except (ValueError, ImportError) as exc:
            raise ModelLoadError(f"cannot use attention {attn_implementation!r}: {exc}") from exc
        return tiny, tiny_tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    try:
        # The name comes from an API client: never run code shipped inside a model repository.
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=torch.float32 if dtype is None else dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=False,
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
    return model, tokenizer


def add_lora_adapters(
    model: PreTrainedModel, settings: LoraSettings, *, gradient_checkpointing: bool
) -> PreTrainedModel:
    """Freeze the model and add trainable low-rank adapters (peft) to its linear layers."""
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        # With every base weight frozen, checkpointed blocks would see inputs that need no
        # gradient and skip the backward pass into the adapters.
        model.enable_input_require_grads()
    # "all-linear" is every linear layer but the output head.
    targets = resolve_targets(settings.target_modules, getattr(model.config, "model_type", None))
    print(f"ainfinity: LoRA adapts {targets if isinstance(targets, str) else ', '.join(targets)}")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        peft_model: Any = get_peft_model(model, config)
    except ValueError as exc:
        raise ModelLoadError(f"cannot add LoRA adapters to {type(model).__name__}: {exc}") from exc
    return peft_model


def apply_adapter(
    model: PreTrainedModel, adapter_dir: Path, *, trainable: bool, gradient_checkpointing: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a saved LoRA adapter over `model`: trainable (to continue it), or merged into the
    weights (a full fine-tune of the adapted model). The tokenizer saved with it comes too."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    if trainable and gradient_checkpointing:
        model.enable_input_require_grads()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=False)
        adapted: Any = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the adapter in {adapter_dir}: {exc}") from exc
    if not trainable:
        adapted = adapted.merge_and_unload()
    return adapted, tokenizer


def save_merged_model(
    name: str,
    adapter_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    seed: int,
) -> Path:
    """Fold the adapter saved in `adapter_dir` into a fresh copy of the base model and save it.

    Reloading the base (in its own dtype) works the same after any ZeRO stage, where the
    training copy may be sharded across ranks. Returns `adapter_dir / "merged"`.
    """
    from peft import PeftModel

    base, _ = load_model_and_tokenizer(name, seed=seed, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    target = adapter_dir / MERGED_DIR_NAME
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target
