"""Training progress for the control plane: one record per logging step, and stop on NaN.

The Trainer's own logs say nothing about throughput, so `CountingTrainer` counts the tokens and
examples of every training batch it runs into a `BatchCounter`, and `MetricsCallback` turns the
counts into rates at each logging step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from ainfinity.train.failures import NonFiniteLossError
from ainfinity.train.packing import REAL_TOKENS_KEY
from ainfinity.train.protocol import METRIC_PREFIX, emit_event

if TYPE_CHECKING:
    import torch
    from torch import nn


class BatchCounter:
    """Non-padding tokens and examples of the training batches this rank ran since the last take.

    What the batch's shape tells is counted on the host; what needs its values (a mask's sum)
    stays on the batch's device until `take`, so counting never makes the host wait for the GPU.
    """

    def __init__(self) -> None:
        self._host = [0, 0]
        self._device: torch.Tensor | None = None

    def _add_on_device(self, tokens: torch.Tensor, examples: torch.Tensor) -> None:
        import torch

        counts = torch.stack([tokens, examples]).long()
        self._device = counts if self._device is None else self._device + counts

    def add(self, inputs: Mapping[str, Any]) -> None:
        """Count one micro-batch as the collator built it (already on the device)."""
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        position_ids = inputs.get("position_ids")
        real_tokens = inputs.get(REAL_TOKENS_KEY)
        if real_tokens is not None and position_ids is not None:
            # Packs as padded rows: the collator counted the real tokens, and the padding
            # continues its row's last positions, so only real examples start at position 0.
            self._add_on_device(tokens=real_tokens, examples=(position_ids == 0).sum())
        elif mask is not None:
            self._add_on_device(tokens=mask.sum(), examples=mask.new_zeros(()))
            self._host[1] += mask.shape[0]
        elif position_ids is not None:
            # A padding-free batch: every token is real, and each example restarts its positions.
            self._host[0] += input_ids.numel()
            self._add_on_device(
                tokens=position_ids.new_zeros(()), examples=(position_ids == 0).sum()
            )
        else:
            self._host[0] += input_ids.numel()
            self._host[1] += input_ids.shape[0]

    def take(self) -> tuple[int, int]:
        """Return `(tokens, examples)` summed over all ranks, and start counting afresh.

        A collective: every rank must call it at the same point.
        """
        import torch
        from accelerate import PartialState
        from accelerate.utils import reduce

        state = PartialState()
        counts = torch.tensor(self._host, dtype=torch.int64, device=state.device)
        if self._device is not None:
            counts += self._device.to(state.device)
        self._host, self._device = [0, 0], None
        if state.num_processes > 1:
            counts = reduce(counts, reduction="sum")
        tokens, examples = counts.tolist()
        return int(tokens), int(examples)


class CountingTrainer(Trainer):
    """A Trainer that feeds every training micro-batch to a `BatchCounter`."""

    def __init__(self, *args: Any, batch_counter: BatchCounter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_counter = batch_counter

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        self.batch_counter.add(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        # A count for the counter, not an input of the model (train and eval batches alike).
        inputs.pop(REAL_TOKENS_KEY, None)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


_REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def _finite_or_none(value: Any) -> float | None:
    # A clipped step can report an infinite norm with a finite loss; JSON has no inf.
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class MetricsCallback(TrainerCallback):
    """Write one JSON record per logging step, and one per evaluation.

    Each record goes to stdout as an `ainfinity-metric` line (the cloud path reads the log
    stream) and, when `metrics_file` is given, is appended to that JSONL file too. Only the
    world's process zero writes; every process checks the loss, so all ranks stop together.
    Rates cover the training steps since the previous record, not evaluation or checkpoint time.
    """

    def __init__(
        self,
        metrics_file: str | Path | None = None,
        stream: TextIO | None = None,
        *,
        batch_counter: BatchCounter | None = None,
    ) -> None:
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.stream = stream
        self.batch_counter = batch_counter or BatchCounter()
        self._window_start = time.perf_counter()
        self._window_step = 0
        # Evaluation and checkpoint time since the window started, and when the last step ended.
        self._paused = 0.0
        self._step_end = self._window_start

    def _restart_window(self, state: TrainerState) -> None:
        self._window_start = self._step_end = time.perf_counter()
        self._window_step = state.global_step
        self._paused = 0.0

    def _pause_since_step_end(self) -> None:
        now = time.perf_counter()
        self._paused += now - self._step_end
        self._step_end = now

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Start timing from here (or the resume step)."""
        self._restart_window(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Note the time: what follows before the next step is evaluation or checkpointing."""
        self._step_end = time.perf_counter()

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Leave the evaluation's time out of the next record's rates."""
        self._pause_since_step_end()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Leave the checkpoint's time out of the next record's rates."""
        self._pause_since_step_end()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a logging step or an evaluation; the end-of-training summary is neither."""
        if not logs:
            return
        if "loss" in logs:
            record = self._training_record(state, logs)
        elif "eval_loss" in logs:
            record = self._record(state, eval_loss=_finite_or_none(logs["eval_loss"]))
        else:
            return
        if state.is_world_process_zero:
            self._write(record)

    def _training_record(self, state: TrainerState, logs: dict[str, float]) -> dict[str, Any]:
        loss = float(logs["loss"])
        # The logged loss is already averaged over ranks, so every rank raises here together.
        if not math.isfinite(loss):
            raise NonFiniteLossError(state.global_step, loss)
        tokens, examples = self.batch_counter.take()
        elapsed = max(time.perf_counter() - self._window_start - self._paused, 1e-9)
        steps = max(state.global_step - self._window_step, 1)
        self._restart_window(state)
        # DPO's own figures (TRL logs them beside the loss).
        rewards = {key: _finite_or_none(logs[key]) for key in _REWARD_KEYS if key in logs}
        return self._record(
            state,
            loss=loss,
            learning_rate=float(logs.get("learning_rate", 0.0)),
            grad_norm=_finite_or_none(logs.get("grad_norm")),
            tokens=tokens,
            tokens_per_second=tokens / elapsed,
            samples_per_second=examples / elapsed,
            step_time_seconds=elapsed / steps,
            **rewards,
        )

    def _record(self, state: TrainerState, **values: Any) -> dict[str, Any]:
        return {
            "step": state.global_step,
            # Unknown (0) before training starts: the starting model's evaluation.
            "total_steps": state.max_steps or None,
            "epoch": float(state.epoch or 0.0),
            **values,
            "time": _now(),
        }

    def _write(self, record: dict[str, Any]) -> None:
        if self.metrics_file is not None:
            # Here, not at the start of training: the starting model is evaluated before it.
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            with self.metrics_file.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(record) + "\n")
                sink.flush()
        emit_event(METRIC_PREFIX, record, self.stream)
        # For people reading the log: the same record in one line.
        print(progress_line(record), file=self.stream or sys.stdout, flush=True)


def progress_line(record: Mapping[str, Any]) -> str:
    """`step 12/24 | loss 0.4339 | lr 1.60e-03 | 150 tokens/s | ETA 0:00:45`, or for an
    evaluation `eval  step 24/24 | eval_loss 0.1982`."""
    total = record.get("total_steps")
    step = f"step {record['step']}/{total}" if total else f"step {record['step']}"
    if record.get("loss") is None:
        eval_loss = record.get("eval_loss")
        shown = f"{eval_loss:.4f}" if isinstance(eval_loss, float) else str(eval_loss)
        return f"eval  {step} | eval_loss {shown}"
    parts = [step, f"loss {record['loss']:.4f}", f"lr {record.get('learning_rate', 0.0):.2e}"]
    if record.get("tokens_per_second") is not None:
        parts.append(f"{record['tokens_per_second']:.0f} tokens/s")
    step_time = record.get("step_time_seconds")
    if total and step_time is not None:
        remaining = max(total - record["step"], 0) * step_time
        parts.append(f"ETA {timedelta(seconds=round(remaining))}")
    return " | ".join(parts)
