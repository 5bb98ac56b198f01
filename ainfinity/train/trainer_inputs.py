"""What the HF Trainer is given for a job: its arguments, and its supervised data.

The arguments come from the job config alone (the same for supervised runs and DPO, which
adds its own on top, `ainfinity.train.dpo`); the data is the dataset tokenized (and packed)
the way `ainfinity.train.tokenization` encodes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ainfinity.train.dataset import DatasetValidationError
from ainfinity.train.deepspeed_configs import deepspeed_config_path
from ainfinity.train.failures import InvalidValidationDataset
from ainfinity.train.job_config import JobConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainingArguments


def trainer_kwargs(
    config: JobConfig, *, use_deepspeed: bool, bf16: bool, on_gpu: bool
) -> dict[str, Any]:
    """The Trainer's arguments for a job: every value from the config, the rest fixed."""
    hp = config.hyperparameters
    eval_steps = hp.eval_steps or hp.save_steps
    evaluate_during = config.validation_dataset is not None and eval_steps is not None
    return {
        "output_dir": str(config.output_dir),
        "run_name": config.name,
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps if hp.max_steps is not None else -1,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": hp.lr_scheduler_type,
        "weight_decay": hp.weight_decay,
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "warmup_steps": hp.warmup_ratio,
        "logging_steps": hp.logging_steps,
        # By default the Trainer logs a NaN loss as the mean of earlier ones, hiding divergence.
        "logging_nan_inf_filter": False,
        "eval_strategy": "steps" if evaluate_during else "no",
        "eval_steps": eval_steps if evaluate_during else None,
        "save_strategy": "steps" if hp.save_steps is not None else "no",
        "save_steps": hp.save_steps or 500,
        # Pruning happens after the completeness marker instead (CheckpointMarkerCallback).
        "save_total_limit": None,
        "seed": hp.seed,
        "bf16": bf16,
        "use_cpu": not on_gpu,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "deepspeed": (
            str(deepspeed_config_path(config.deepspeed.zero_stage, config.deepspeed.offload))
            if use_deepspeed
            else None
        ),
    }


def training_arguments(
    config: JobConfig, *, use_deepspeed: bool, bf16: bool, on_gpu: bool
) -> TrainingArguments:
    from transformers import TrainingArguments

    return TrainingArguments(
        **trainer_kwargs(config, use_deepspeed=use_deepspeed, bf16=bf16, on_gpu=on_gpu)
    )


@dataclass(frozen=True)
class TrainingData:
    """What the Trainer is fed: train and validation rows, their collator, and what to report."""

    train: list[dict[str, list[int]]]
    validation: list[dict[str, list[int]]] | None
    collator: Callable[[list[dict[str, list[int]]]], dict[str, Any]]
    # The `ainfinity-dataset` payload: token statistics of the training set, and its format.
    statistics: dict[str, Any]


def load_training_data(
    config: JobConfig, tokenizer: PreTrainedTokenizerBase, *, attn_implementation: str
) -> TrainingData:
    """Tokenize (and, with `packing`, pack) the train and validation sets.

    Chat data installs a default chat template on a tokenizer without one; the tokenizer is
    saved with the model, so inference renders prompts as training did.
    """
    from ainfinity.train.dataset import (
        CausalLMCollator,
        PackedRowsCollator,
        PaddingFreeCollator,
        pack_examples,
        tokenize_dataset,
    )

    hp = config.hyperparameters

    def load(path: Path) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
        # One tokenization pass gives both the examples and the statistics.
        tokenized = tokenize_dataset(
            path,
            tokenizer,
            max_seq_length=hp.max_seq_length,
            completion_only_loss=hp.completion_only_loss,
        )
        examples = tokenized.examples
        if hp.packing:
            examples = pack_examples(examples, hp.max_seq_length)
        return examples, {**tokenized.stats.as_dict(), "format": tokenized.format}

    train_set, statistics = load(config.dataset)
    validation_set = None
    if config.validation_dataset is not None:
        try:
            validation_set, _ = load(config.validation_dataset)
        except DatasetValidationError as exc:
            raise InvalidValidationDataset(str(exc)) from exc
    padded = CausalLMCollator.for_tokenizer(tokenizer)
    collator: Callable[[list[dict[str, list[int]]]], dict[str, Any]] = padded
    if hp.packing:
        # Variable-length flash attention takes the whole batch as one row at no extra cost;
        # sdpa and eager pay for the square of a row's length, so they get one row per pack.
        collator = (
            PaddingFreeCollator()
            if attn_implementation == "flash_attention_2"
            else PackedRowsCollator(pad_token_id=padded.pad_token_id)
        )
    return TrainingData(train_set, validation_set, collator, statistics)
