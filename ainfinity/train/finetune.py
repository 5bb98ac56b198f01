"""Fine-tune a causal language model on a JSONL dataset with the Hugging Face Trainer.

One process (CPU or one GPU); the control plane writes job_config.json:

    python -m ainfinity.train.finetune --config job_config.json

Several GPUs with DeepSpeed ZeRO (stage and offload come from the job config):

    deepspeed --num_gpus 8 --module ainfinity.train.finetune --config job_config.json --deepspeed
    torchrun --nproc_per_node 8 -m ainfinity.train.finetune --config job_config.json --deepspeed

Progress goes to stdout as `ainfinity-metric {...}` lines (and to $AINFINITY_METRICS_FILE when
set), the dataset's token statistics as one `ainfinity-dataset {...}` line before training, and
success as one `ainfinity-done {...}` line. A recognised failure prints
`ainfinity-error {"code": ..., "msg": ...}` and exits with status 1; anything else prints its
traceback and exits non-zero. See `ainfinity.train.protocol`.

Checkpoints go to `output_dir/checkpoint-<step>` every `save_steps`; a relaunch with the same
output_dir resumes from the newest complete one (how a preempted spot job recovers).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules at the top: a bad config or dataset is reported before torch loads.
from ainfinity.train.checkpoints import discard_incomplete_after, latest_complete_checkpoint
from ainfinity.train.dataset import DatasetReport, DatasetValidationError, validate_dataset
from ainfinity.train.deepspeed_configs import deepspeed_config_path
from ainfinity.train.failures import (
    InvalidValidationDataset,
    NonFiniteLossError,
    error_code,
    short_message,
)
from ainfinity.train.job_config import JobConfig, JobConfigError, load_job_config
from ainfinity.train.protocol import (
    DATASET_PREFIX,
    DONE_PREFIX,
    ERROR_PREFIX,
    METRICS_FILE_ENV,
    PAUSED_PREFIX,
    RESUME_NOTICE,
    ErrorCode,
    emit_event,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainingArguments

    from ainfinity.train.pause import PauseRequest

# For these the one-line message says it all; other codes print their traceback to stderr too.
_EXPLAINED_BY_MESSAGE = frozenset({ErrorCode.INVALID_DATASET, ErrorCode.NAN_LOSS})


def build_parser() -> argparse.ArgumentParser:
    """The command line: a job config file, and whether to run under DeepSpeed."""
    parser = argparse.ArgumentParser(
        prog="python -m ainfinity.train.finetune",
        description="Fine-tune a causal language model as a job config file describes.",
    )
    parser.add_argument("--config", required=True, help="Path of the job config JSON file.")
    parser.add_argument(
        "--deepspeed",
        action="store_true",
        help="Train with the packaged DeepSpeed config for the job's zero_stage and offload.",
    )
    # The `deepspeed` launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def use_single_process_defaults() -> None:
    """Let `--deepspeed` run without a launcher, as one rank on this machine.

    Without these variables DeepSpeed looks for an MPI environment (and `mpi4py`) instead.
    """
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def training_arguments(
    config: JobConfig, *, use_deepspeed: bool, bf16: bool, on_gpu: bool
) -> TrainingArguments:
    """The Trainer's arguments for a job: every value from the config, the rest fixed."""
    from transformers import TrainingArguments

    hp = config.hyperparameters
    eval_steps = hp.eval_steps or hp.save_steps
    evaluate_during = config.validation_dataset is not None and eval_steps is not None
    return TrainingArguments(
        output_dir=str(config.output_dir),
        run_name=config.name,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type,
        weight_decay=hp.weight_decay,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        gradient_checkpointing=hp.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        warmup_steps=hp.warmup_ratio,
        logging_steps=hp.logging_steps,
        # By default the Trainer logs a NaN loss as the mean of earlier ones, hiding divergence.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=eval_steps if evaluate_during else None,
        save_strategy="steps" if hp.save_steps is not None else "no",
        save_steps=hp.save_steps or 500,
        # Pruning happens after the completeness marker instead (CheckpointMarkerCallback).
        save_total_limit=None,
        seed=hp.seed,
        bf16=bf16,
        use_cpu=not on_gpu,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        deepspeed=(
            str(deepspeed_config_path(config.deepspeed.zero_stage, config.deepspeed.offload))
            if use_deepspeed
            else None
        ),
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


def _run_mean_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean training loss per step over the whole run, a resumed one's earlier part included.

    (The Trainer's own `training_loss` divides this session's losses by the global step count.)
    """
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            window = entry["step"] - previous
            total, steps, previous = total + entry["loss"] * window, steps + window, entry["step"]
    return total / steps if steps else None


def _evaluated_at(log_history: list[dict[str, Any]], step: int) -> bool:
    return any("eval_loss" in entry and entry.get("step") == step for entry in log_history)


def train(
    config: JobConfig, *, use_deepspeed: bool = False, pause: PauseRequest | None = None
) -> None:
    """Train as the job config says, save model and tokenizer, and print `ainfinity-done`
    (or, when asked to pause, save a checkpoint and print `ainfinity-paused`)."""
    import torch

    from ainfinity.train.pause import PauseCallback, PauseRequest

    if use_deepspeed:
        use_single_process_defaults()
    if not torch.cuda.is_available():
        # The Trainer imports DeepSpeed even without --deepspeed; on a CPU-only machine DeepSpeed
        # then picks its CPU accelerator anyway, after printing a warning to stdout.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    from transformers import PrinterCallback, set_seed
    from transformers.utils import logging as hf_logging

    from ainfinity.train.checkpoint_callback import CheckpointMarkerCallback
    from ainfinity.train.metrics import BatchCounter, CountingTrainer, MetricsCallback
    from ainfinity.train.model_loading import (
        add_lora_adapters,
        apply_adapter,
        load_model_and_tokenizer,
        resolve_attn_implementation,
        save_merged_model,
    )

    hf_logging.disable_progress_bar()
    hp = config.hyperparameters
    set_seed(hp.seed)
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    print(f"ainfinity: training on {device} in {'bf16' if bf16 else 'fp32'}", flush=True)

    # Built before the model: under ZeRO-3 the arguments make from_pretrained shard as it loads.
    args = training_arguments(config, use_deepspeed=use_deepspeed, bf16=bf16, on_gpu=on_gpu)
    is_main = args.process_index == 0

    resume_from = latest_complete_checkpoint(config.output_dir)
    if is_main:
        resumed_step = int(resume_from.name.rsplit("-", 1)[1]) if resume_from else 0
        # Half-written checkpoints from the preempted run: the steps are redone and resaved.
        discard_incomplete_after(config.output_dir, resumed_step)
        if resume_from is not None:
            print(f"{RESUME_NOTICE} {resume_from} (step {resumed_step})", flush=True)

    lora = config.method == "lora"
    attn_implementation = resolve_attn_implementation(hp.attn_implementation)
    model_seed = hp.seed if config.model_seed is None else config.model_seed
    model, tokenizer = load_model_and_tokenizer(
        config.model,
        seed=model_seed,
        attn_implementation=attn_implementation,
        # Frozen base weights need no fp32 master copy: half the memory for LoRA.
        dtype=torch.bfloat16 if lora and bf16 else None,
    )
    if config.adapter is not None:
        # Continuing a LoRA fine-tune: its adapter (and its tokenizer, chat template included).
        model, tokenizer = apply_adapter(
            model, config.adapter, trainable=lora, gradient_checkpointing=hp.gradient_checkpointing
        )
    elif lora:
        model = add_lora_adapters(
            model, config.lora, gradient_checkpointing=hp.gradient_checkpointing
        )
    data = load_training_data(config, tokenizer, attn_implementation=attn_implementation)
    if is_main:
        emit_event(DATASET_PREFIX, data.statistics)

    batch_counter = BatchCounter()
    pause_callback = PauseCallback(pause or PauseRequest())
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=data.train,  # a list is all a map-style dataset needs
        eval_dataset=data.validation,
        data_collator=data.collator,
        processing_class=tokenizer,
        callbacks=[
            # First, so the metrics leave the marker's barrier out of the step time too.
            CheckpointMarkerCallback(keep=hp.save_total_limit),
            MetricsCallback(
                metrics_file=os.environ.get(METRICS_FILE_ENV) or None,
                batch_counter=batch_counter,
            ),
            pause_callback,
        ],
        batch_counter=batch_counter,
    )
    # Its dict dumps would duplicate the ainfinity-metric lines on stdout.
    trainer.remove_callback(PrinterCallback)

    if data.validation is not None and resume_from is None:
        # The starting model's validation loss (step 0): what the run is measured against.
        # A resumed run measured it when it first started.
        evaluate_before_training(trainer, use_deepspeed=use_deepspeed)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if pause_callback.paused_at is not None:
        if is_main:
            checkpoint = config.output_dir / f"checkpoint-{pause_callback.paused_at}"
            emit_event(
                PAUSED_PREFIX, {"step": pause_callback.paused_at, "checkpoint": str(checkpoint)}
            )
        _leave_process_group()
        return
    train_loss = _run_mean_loss(trainer.state.log_history)
    if train_loss is None:
        train_loss = result.training_loss
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(trainer.state.global_step, train_loss)
    if data.validation is not None and not _evaluated_at(
        trainer.state.log_history, trainer.state.global_step
    ):
        # The final model's validation loss, whatever the eval schedule left out.
        trainer.evaluate()

    # Saves the tokenizer too (processing_class); gathers ZeRO-3 shards into one model; for LoRA
    # writes the adapter only.
    trainer.save_model(str(config.output_dir))
    if lora and config.lora.merge and is_main:
        save_merged_model(config.model, config.output_dir, tokenizer, seed=model_seed)
    if is_main:
        emit_event(
            DONE_PREFIX,
            {"output_dir": str(config.output_dir), "train_loss": train_loss},
        )
    _leave_process_group()


def evaluate_before_training(trainer: Any, *, use_deepspeed: bool) -> None:
    """Evaluate the starting model, as the eval record of step 0.

    Without DeepSpeed that is `trainer.evaluate()`. Under DeepSpeed the engine only exists
    once training starts (an evaluation before it is refused under ZeRO-1/2), so the same
    evaluation runs from a callback at the start of training instead.
    """
    if not use_deepspeed:
        trainer.evaluate()
        return
    from transformers import TrainerCallback

    class EvaluateFirst(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:
                trainer.evaluate()

    trainer.add_callback(EvaluateFirst())


def _leave_process_group() -> None:
    """Leave the process group together, before the interpreter exits.

    Left to interpreter teardown, a rank whose communication threads are still up now and then
    dies in C++ ("terminate called without an active exception", exit status 250) after
    training succeeded: seen about once in eight 2-rank CPU runs.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _validated(path: Path, *, validation: bool) -> DatasetReport:
    report = validate_dataset(path)
    if not report.ok:
        error = DatasetValidationError(report)
        raise InvalidValidationDataset(str(error)) if validation else error
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job; return the process exit status."""
    from ainfinity.train.pause import PAUSE_SIGNAL, PauseRequest

    # At once: a pause asked for while the model still loads is honoured at the first step.
    pause = PauseRequest()
    pause.install(PAUSE_SIGNAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_job_config(args.config)
    except JobConfigError as exc:
        parser.error(str(exc))

    try:
        report = _validated(config.dataset, validation=False)
        if config.validation_dataset is not None:
            validation = _validated(config.validation_dataset, validation=True)
            if validation.format != report.format:
                raise InvalidValidationDataset(
                    f"{validation.format!r} data, but the dataset is {report.format!r} data"
                )
        train(config, use_deepspeed=args.deepspeed, pause=pause)
    except Exception as exc:
        code = error_code(exc)
        if code is None:
            raise
        if code not in _EXPLAINED_BY_MESSAGE:
            import traceback

            traceback.print_exc()
        emit_event(ERROR_PREFIX, {"code": code.value, "msg": short_message(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
