"""How a job trains: hyperparameters and the options of each method (LoRA, DPO, DeepSpeed)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ainfinity.schema.base import StrictModel


class Hyperparameters(StrictModel):
    """Training hyperparameters; `max_steps`, when set, overrides `epochs`."""

    epochs: float = Field(1.0, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    learning_rate: float = Field(2e-5, gt=0, le=1)
    batch_size: int = Field(1, ge=1, le=4096, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    max_seq_length: int = Field(1024, ge=8, le=131_072)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    logging_steps: int = Field(1, ge=1, le=100_000)
    weight_decay: float = Field(0.0, ge=0, le=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    packing: bool = Field(
        False,
        description="Pack rows into max_seq_length sequences; attention never crosses rows.",
    )
    completion_only_loss: bool = Field(
        True, description="Learn only completions / assistant turns (prompt tokens masked)."
    )
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="`auto`: flash_attention_2 on a GPU that has it installed, else sdpa."
    )
    save_steps: int | None = Field(
        500,
        ge=1,
        le=10_000_000,
        description="Checkpoint every N steps (a relaunch resumes from the newest); null: never.",
    )
    save_total_limit: int | None = Field(2, ge=1, le=1000, description="null: keep all.")
    eval_steps: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Evaluate every N steps; null: at each checkpoint, or at the end.",
    )


class LoraOptions(StrictModel):
    """Low-rank adapters (peft); used when `method` is `lora`."""

    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: (
        Literal["auto", "all-linear"]
        | Annotated[
            list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,128}$")]],
            Field(min_length=1, max_length=64),
        ]
        | None
    ) = Field(
        "auto",
        description="`auto`: the attention and MLP projections of Llama-, Mistral-, Qwen- and "
        "Gemma-family models (every linear layer for others); `all-linear`; or layer names. "
        "The job shows the list chosen as `lora_target_modules`.",
    )
    merge: bool = Field(False, description="Also save merged full weights in output_dir/merged.")


class DpoOptions(StrictModel):
    """Direct preference optimisation (TRL's DPOTrainer); used when `method` is `dpo`."""

    beta: float = Field(
        0.1,
        gt=0,
        le=10,
        description="How far the model may move from its reference: small is far.",
    )


class DeepSpeedOptions(StrictModel):
    """ZeRO stage and CPU offload, applied when the job runs on GPUs."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    offload: bool = False

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> DeepSpeedOptions:
        if self.offload and self.zero_stage < 2:
            raise ValueError("offload needs zero_stage 2 or 3")
        return self
