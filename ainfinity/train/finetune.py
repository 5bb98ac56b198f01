"""Fine-tune a causal language model on a JSONL dataset with the Hugging Face Trainer.

One process (CPU or one GPU); the control plane writes job_config.json:

    python -m ainfinity.train.finetune --config job_config.json

Several GPUs with DeepSpeed ZeRO (stage and offload come from the job config):

    torchrun --nproc_per_node 8 -m ainfinity.train.finetune --config job_config.json --deepspeed

Progress goes to stdout as `ainfinity-metric {...}` lines (and to $AINFINITY_METRICS_FILE when
set), success as one `ainfinity-done {...}` line. A recognised failure prints
`ainfinity-error {"code": ..., "msg": ...}` and exits with status 1; anything else prints its
traceback and exits non-zero. See `ainfinity.train.protocol`.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# Only light modules at the top: a bad config or dataset is reported before torch loads.
from ainfinity.train.dataset import DatasetValidationError, validate_dataset
from ainfinity.train.deepspeed_configs import deepspeed_config_path
from ainfinity.train.failures import (
    ModelLoadError,
    NonFiniteLossError,
    error_code,
    short_message,
)
from ainfinity.train.job_config import JobConfig, JobConfigError, load_job_config
from ainfinity.train.protocol import (
    DONE_PREFIX,
    ERROR_PREFIX,
    METRICS_FILE_ENV,
    ErrorCode,
    emit_event,
)
from ainfinity.train.tiny_model import TINY_MODEL_NAME, build_tiny_random_llama

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
    return parser


def load_model_and_tokenizer(
    name: str, *, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the tiny test model, or load a local directory or hub id with `from_pretrained`."""
    if name == TINY_MODEL_NAME:
        return build_tiny_random_llama(seed)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # The name comes from an API client: never run code shipped inside a model repository.
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        # Full-precision master weights; the Trainer (or DeepSpeed) handles bf16 compute.
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch.float32, trust_remote_code=False
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
    return model, tokenizer


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


def train(config: JobConfig, *, use_deepspeed: bool = False) -> None:
    """Train as the job config says, save model and tokenizer, and print `ainfinity-done`."""
    import torch

    if use_deepspeed:
        use_single_process_defaults()
    if not torch.cuda.is_available():
        # The Trainer imports DeepSpeed even without --deepspeed; on a CPU-only machine DeepSpeed
        # then picks its CPU accelerator anyway, after printing a warning to stdout.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    from ainfinity.train.dataset import CausalLMCollator, load_examples
    from ainfinity.train.metrics import MetricsCallback

    hf_logging.disable_progress_bar()
    hp = config.hyperparameters
    set_seed(hp.seed)
    on_gpu = torch.cuda.is_available()

    # Built before the model: under ZeRO-3 the arguments make from_pretrained shard as it loads.
    training_args = TrainingArguments(
        output_dir=str(config.output_dir),
        run_name=config.name,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps if hp.max_steps is not None else -1,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        warmup_steps=hp.warmup_ratio,
        logging_steps=hp.logging_steps,
        # By default the Trainer logs a NaN loss as the mean of earlier ones, hiding divergence.
        logging_nan_inf_filter=False,
        seed=hp.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not on_gpu,
        save_strategy="no",
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

    model, tokenizer = load_model_and_tokenizer(config.model, seed=hp.seed)
    examples = load_examples(config.dataset, tokenizer, max_seq_length=hp.max_seq_length)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=examples,  # a list is all a map-style dataset needs
        data_collator=CausalLMCollator.for_tokenizer(tokenizer),
        processing_class=tokenizer,
        callbacks=[MetricsCallback(metrics_file=os.environ.get(METRICS_FILE_ENV) or None)],
    )
    # Its dict dumps would duplicate the ainfinity-metric lines on stdout.
    trainer.remove_callback(PrinterCallback)

    result = trainer.train()
    if not math.isfinite(result.training_loss):
        raise NonFiniteLossError(trainer.state.global_step, result.training_loss)

    # Saves the tokenizer too (processing_class); gathers ZeRO-3 shards into one model.
    trainer.save_model(str(config.output_dir))
    if trainer.is_world_process_zero():
        emit_event(
            DONE_PREFIX,
            {"output_dir": str(config.output_dir), "train_loss": result.training_loss},
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_job_config(args.config)
    except JobConfigError as exc:
        parser.error(str(exc))

    try:
        report = validate_dataset(config.dataset)
        if not report.ok:
            raise DatasetValidationError(report)
        train(config, use_deepspeed=args.deepspeed)
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
