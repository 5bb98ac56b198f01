"""The metrics callback and the event lines it prints, driven the way the Trainer drives them."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from ainfinity.train.dataset import CausalLMCollator, PackedRowsCollator, PaddingFreeCollator
from ainfinity.train.failures import NonFiniteLossError
from ainfinity.train.metrics import BatchCounter, MetricsCallback, progress_line
from ainfinity.train.protocol import (
    DATASET_PREFIX,
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

        callback.on_train_begin(training_args, trainer_state(step=1), TrainerControl())
        callback.batch_counter.add(PADDED_BATCH)
        logs = {"loss": 1.5, "learning_rate": 1e-3, "grad_norm": 0.25, "epoch": 0.5}
        callback.on_log(training_args, state, TrainerControl(), logs=logs)

        line, readable = stream.getvalue().splitlines()
        event = parse_event(line)
        assert event is not None and event.kind == METRIC_PREFIX
        # And the same for people: step, loss, lr, tokens/s and ETA in one line.
        assert readable == progress_line(event.payload)
        assert re.fullmatch(
            r"step 3/10 \| loss 1\.5000 \| lr 1\.00e-03 \| \d+ tokens/s \| ETA \d:\d\d:\d\d",
            readable,
        ), readable
        assert json.loads(metrics_file.read_text()) == event.payload
        record = dict(event.payload)
        assert datetime.fromisoformat(record.pop("time")).utcoffset() is not None
        step_time = record.pop("step_time_seconds")
        # Two steps (2 and 3) since training began at step 1.
        assert record.pop("tokens_per_second") * 2 * step_time == pytest.approx(5)
        assert record.pop("samples_per_second") * 2 * step_time == pytest.approx(2)
        assert record.pop("tokens") == 5
        assert record == {
            "step": 3,
            "total_steps": 10,
            "epoch": 0.5,
            "loss": 1.5,
            "learning_rate": 1e-3,
            "grad_norm": 0.25,
        }

    def test_writes_an_eval_record(self, training_args: TrainingArguments) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(stream=stream)

        logs = {"eval_loss": 0.75, "eval_runtime": 0.1, "epoch": 0.5}
        callback.on_log(training_args, trainer_state(), TrainerControl(), logs=logs)

        event = parse_event(stream.getvalue().splitlines()[0])
        assert event is not None
        assert set(event.payload) == {"step", "total_steps", "epoch", "eval_loss", "time"}
        assert event.payload["eval_loss"] == 0.75

    def test_leaves_evaluation_and_checkpoint_time_out_of_the_step_time(
        self, training_args: TrainingArguments
    ) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(stream=stream)
        control = TrainerControl()

        callback.on_train_begin(training_args, trainer_state(step=0), control)
        callback.on_step_end(training_args, trainer_state(step=1), control)
        time.sleep(0.2)  # "evaluating" and "saving"
        callback.on_evaluate(training_args, trainer_state(step=1), control)
        callback.on_save(training_args, trainer_state(step=1), control)
        callback.on_step_end(training_args, trainer_state(step=2), control)
        callback.on_log(training_args, trainer_state(step=2), control, logs={"loss": 1.0})

        event = parse_event(stream.getvalue().splitlines()[0])
        assert event is not None
        assert event.payload["step_time_seconds"] < 0.05

    def test_skips_the_end_of_training_summary(self, training_args: TrainingArguments) -> None:
        stream = io.StringIO()
        callback = MetricsCallback(stream=stream)

        logs = {"train_loss": 1.0, "train_runtime": 3.0}
        callback.on_log(training_args, trainer_state(), TrainerControl(), logs=logs)

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

        event = parse_event(stream.getvalue().splitlines()[0])
        assert event is not None and event.payload["grad_norm"] is None


# Three examples (7 tokens) in two packs of 5 and 2 tokens.
TWO_PACKS = [
    {
        "input_ids": [1, 2, 3, 4, 5],
        "labels": [-100, 2, 3, -100, 5],
        "position_ids": [0, 1, 2, 0, 1],
    },
    {"input_ids": [6, 7], "labels": [-100, 7], "position_ids": [0, 1]},
]


# Two rows padded to three tokens: five real tokens.
PADDED_BATCH = CausalLMCollator(pad_token_id=0)(
    [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [5, 6, 7]},
        {"input_ids": [8, 9], "attention_mask": [1, 1], "labels": [8, 9]},
    ]
)


class TestBatchCounter:
    def test_counts_non_padding_tokens_and_rows_of_padded_batches(self) -> None:
        counter = BatchCounter()

        counter.add(PADDED_BATCH)
        counter.add(PADDED_BATCH)

        assert counter.take() == (10, 4)
        assert counter.take() == (0, 0)

    def test_counts_the_examples_inside_a_padding_free_batch(self) -> None:
        counter = BatchCounter()

        counter.add(PaddingFreeCollator()(TWO_PACKS))

        assert counter.take() == (7, 3)

    def test_leaves_the_padding_of_packed_rows_out(self) -> None:
        counter = BatchCounter()
        batch = PackedRowsCollator(pad_token_id=0)(TWO_PACKS)

        counter.add(batch)

        assert batch["input_ids"].shape == (2, 5)
        assert counter.take() == (7, 3)


class TestParseEvent:
    def test_reads_an_event_behind_a_log_collector_prefix(self) -> None:
        line = "(task, pid=4242) " + format_event(DONE_PREFIX, {"train_loss": 1.25})

        assert parse_event(line) == TrainerEvent(DONE_PREFIX, {"train_loss": 1.25})

    def test_reads_a_dataset_event(self) -> None:
        line = format_event(DATASET_PREFIX, {"rows": 3, "format": "chat"})

        assert parse_event(line) == TrainerEvent(DATASET_PREFIX, {"rows": 3, "format": "chat"})

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
