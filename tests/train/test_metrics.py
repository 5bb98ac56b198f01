"""The metrics callback and the event lines it prints, driven the way the Trainer drives them."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from ainfinity.train.failures import NonFiniteLossError
from ainfinity.train.metrics import MetricsCallback
from ainfinity.train.protocol import (
    DONE_PREFIX,
    METRIC_PREFIX,
    TrainerEvent,
    format_event,
    parse_event,
)


@pytest.fixture
def training_args(tmp_path: Path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")


def trainer_state(step: int = 3, *, world_zero: bool = True) -> TrainerState:
    state = TrainerState(max_steps=10, epoch=0.5, global_step=step)
    state.is_world_process_zero = world_zero
    return state


class TestMetricsCallback:
    def test_writes_the_same_record_to_stdout_and_the_metrics_file(
        self, tmp_path: Path, training_args: TrainingArguments
    ) -> None:
        metrics_file = tmp_path / "nested" / "metrics.jsonl"
        stream = io.StringIO()
        callback = MetricsCallback(metrics_file=metrics_file, stream=stream)
        state = trainer_state()

        callback.on_train_begin(training_args, state, TrainerControl())
        logs = {"loss": 1.5, "learning_rate": 1e-3, "grad_norm": 0.25, "epoch": 0.5}
        callback.on_log(training_args, state, TrainerControl(), logs=logs)

        [line] = stream.getvalue().splitlines()
        event = parse_event(line)
        assert event is not None and event.kind == METRIC_PREFIX
        assert json.loads(metrics_file.read_text()) == event.payload
        record = dict(event.payload)
        assert datetime.fromisoformat(record.pop("time")).utcoffset() is not None
        assert record == {
            "step": 3,
            "total_steps": 10,
            "epoch": 0.5,
            "loss": 1.5,
            "learning_rate": 1e-3,
            "grad_norm": 0.25,
        }

    def test_skips_logs_without_a_loss(self, training_args: TrainingArguments) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(stream=stream)

        callback.on_log(training_args, trainer_state(), TrainerControl(), logs={"train_loss": 1.0})

        assert stream.getvalue() == ""

    def test_only_world_process_zero_writes(
        self, tmp_path: Path, training_args: TrainingArguments
    ) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(metrics_file=tmp_path / "m.jsonl", stream=stream)

        state = trainer_state(world_zero=False)
        callback.on_log(training_args, state, TrainerControl(), logs={"loss": 1.0})

        assert stream.getvalue() == ""
        assert not (tmp_path / "m.jsonl").exists()

    @pytest.mark.parametrize("loss", [float("nan"), float("inf")])
    def test_stops_training_on_a_non_finite_loss_on_every_rank(
        self, training_args: TrainingArguments, loss: float
    ) -> None:
        callback = MetricsCallback(stream=io.StringIO())

        with pytest.raises(NonFiniteLossError, match="at step 7"):
            state = trainer_state(7, world_zero=False)
            callback.on_log(training_args, state, TrainerControl(), logs={"loss": loss})

    def test_reports_an_infinite_grad_norm_as_null(self, training_args: TrainingArguments) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(stream=stream)

        logs = {"loss": 2.0, "learning_rate": 0.1, "grad_norm": float("inf")}
        callback.on_log(training_args, trainer_state(), TrainerControl(), logs=logs)

        event = parse_event(stream.getvalue())
        assert event is not None and event.payload["grad_norm"] is None


class TestParseEvent:
    def test_reads_an_event_behind_a_log_collector_prefix(self) -> None:
        line = "(task, pid=4242) " + format_event(DONE_PREFIX, {"train_loss": 1.25})

        assert parse_event(line) == TrainerEvent(DONE_PREFIX, {"train_loss": 1.25})

    @pytest.mark.parametrize(
        "line",
        [
            "",
            "plain log line",
            "ainfinity-metric {broken",
            "ainfinity-metric [1]",
            "xainfinity-done {}",
        ],
    )
    def test_ignores_other_lines(self, line: str) -> None:
        assert parse_event(line) is None

    def test_refuses_to_format_nan(self) -> None:
        with pytest.raises(ValueError):
            format_event(METRIC_PREFIX, {"loss": float("nan")})
