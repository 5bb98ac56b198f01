"""Preference tuning (method `dpo`) with TRL's DPOTrainer, the well-kept implementation.

The rest of the recipe is the same as supervised runs: the Trainer arguments (DeepSpeed,
checkpoints, evaluation schedule), the LoRA option, the metrics stream (each record adds
`rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`), the
checkpoint markers and pausing. The reference model is the starting model: a frozen copy
for a full run, the base under the adapters (disabled) for a LoRA one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ainfinity.train.chat import ensure_chat_template
from ainfinity.train.job_config import JobConfig
from ainfinity.train.metrics import BatchCounter
from ainfinity.train.preference import read_preferences
from ainfinity.train.trainer_inputs import trainer_kwargs

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def reference_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The frozen reference of a full DPO run: the starting weights, taken before training.

    (TRL would reload it from the model's path, which a built-in model does not have.)"""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    reference.eval()
    return reference


def build_dpo_trainer(
    config: JobConfig,
    *,
    model: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    callbacks: list[TrainerCallback],
    batch_counter: BatchCounter,
    use_deepspeed: bool,
    bf16: bool,
    on_gpu: bool,
) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class CountingDPOTrainer(DPOTrainer):
        """Counts each training batch's tokens, chosen and rejected rows alike."""

        def training_step(
            self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
        ) -> Any:
            batch_counter.add(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    # TRL renders the conversations with the tokenizer's template: give one to a tokenizer
    # without (saved with the model, so the served model sees prompts as training did).
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = DPOConfig(
        **trainer_kwargs(config, use_deepspeed=use_deepspeed, bf16=bf16, on_gpu=on_gpu),
        beta=config.dpo.beta,
        max_length=config.hyperparameters.max_seq_length,
    )
    return CountingDPOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=_dataset(Dataset, config.dataset),
        eval_dataset=(
            _dataset(Dataset, config.validation_dataset)
            if config.validation_dataset is not None
            else None
        ),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _dataset(dataset_class: Any, path: Path) -> Any:
    return dataset_class.from_list(list(read_preferences(path)))


def preference_statistics(path: Path) -> dict[str, Any]:
    """The `ainfinity-dataset` payload of a preference file: its rows and format."""
    return {"rows": sum(1 for _ in read_preferences(path)), "format": "preference"}
