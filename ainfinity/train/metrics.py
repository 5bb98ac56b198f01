"""A Trainer callback that reports each logged loss to the control plane and stops on NaN."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ainfinity.train.failures import NonFiniteLossError
from ainfinity.train.protocol import METRIC_PREFIX, emit_event


class MetricsCallback(TrainerCallback):
    """Write one JSON record per logging step that carries a training loss.

    Each record goes to stdout as an `ainfinity-metric` line (the cloud path reads the log
    stream) and, when `metrics_file` is given, is appended to that JSONL file too. Only the
    world's process zero writes; every process checks the loss, so all ranks stop together.
    """

    def __init__(self, metrics_file: str | Path | None = None, stream: TextIO | None = None):
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.stream = stream

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Create the metrics file's directory before the first record needs it."""
        if self.metrics_file is not None and state.is_world_process_zero:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a logging step; the end-of-training summary has `train_loss`, not `loss`."""
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(state.global_step, loss)
        if not state.is_world_process_zero:
            return
        grad_norm = logs.get("grad_norm")
        record = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": float(state.epoch or 0.0),
            "loss": loss,
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            # A clipped step can report an infinite norm with a finite loss; JSON has no inf.
            "grad_norm": float(grad_norm)
            if grad_norm is not None and math.isfinite(grad_norm)
            else None,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        if self.metrics_file is not None:
            with self.metrics_file.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(record) + "\n")
                sink.flush()
        emit_event(METRIC_PREFIX, record, self.stream)
