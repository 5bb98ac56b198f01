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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules at the top: a bad config or dataset is reported before torch loads.
from ainfinity.train.checkpoints import discard_incomplete_after, latest_complete_checkpoint
from ainfinity.train.dataset import DatasetReport, DatasetValidationError, validate_dataset
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
from ainfinity.train.trainer_inputs import load_training_data, training_arguments

if TYPE_CHECKING:
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
    from ainfinity.train.dpo import build_dpo_trainer, preference_statistics, reference_copy
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
    dpo = config.method == "dpo"

    resume_from = latest_complete_checkpoint(config.output_dir)
    if is_main:
        resumed_step = int(resume_from.name.rsplit("-", 1)[1]) if resume_from else 0
        # Half-written checkpoints from the preempted run: the steps are redone and resaved.
        discard_incomplete_after(config.output_dir, resumed_step)
        if resume_from is not None:
            print(f"{RESUME_NOTICE} {resume_from} (step {resumed_step})", flush=True)

    lora = config.method == "lora" or config.use_lora
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
    # DPO's reference is the starting model: without adapters, a frozen copy of it.
    reference = reference_copy(model) if dpo and not lora else None
    if lora and config.adapter is None:
        model = add_lora_adapters(
            model, config.lora, gradient_checkpointing=hp.gradient_checkpointing
        )

    batch_counter = BatchCounter()
    pause_callback = PauseCallback(pause or PauseRequest())
    callbacks = [
        # First, so the metrics leave the marker's barrier out of the step time too.
        CheckpointMarkerCallback(keep=hp.save_total_limit),
        MetricsCallback(
            metrics_file=os.environ.get(METRICS_FILE_ENV) or None,
            batch_counter=batch_counter,
        ),
        pause_callback,
    ]
    trainer: Any
    if dpo:
        if is_main:
            emit_event(DATASET_PREFIX, preference_statistics(config.dataset))
        trainer = build_dpo_trainer(
            config,
            model=model,
            reference=reference,
            tokenizer=tokenizer,
            callbacks=callbacks,
            batch_counter=batch_counter,
            use_deepspeed=use_deepspeed,
            bf16=bf16,
            on_gpu=on_gpu,
        )
    else:
        data = load_training_data(config, tokenizer, attn_implementation=attn_implementation)
        if is_main:
            emit_event(DATASET_PREFIX, data.statistics)
        trainer = CountingTrainer(
            model=model,
            args=args,
            train_dataset=data.train,  # a list is all a map-style dataset needs
            eval_dataset=data.validation,
            data_collator=data.collator,
            processing_class=tokenizer,
            callbacks=callbacks,
            batch_counter=batch_counter,
        )
    # Its dict dumps would duplicate the ainfinity-metric lines on stdout.
    trainer.remove_callback(PrinterCallback)
    has_validation = config.validation_dataset is not None

    if has_validation and resume_from is None:
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
    if has_validation and not _evaluated_at(trainer.state.log_history, trainer.state.global_step):
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
