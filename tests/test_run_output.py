"""Reading what a run leaves behind: log tails and failure reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ainfinity.jobs.failure import classify_failure
from ainfinity.jobs.logs import read_chunks, tail_offset
from ainfinity.jobs.run_output import (
    failure_log,
    latest_metrics,
    read_metrics,
    tail_bytes,
)


def read_log(path: Path, tail: int | None) -> str:
    start = tail_offset(path, tail) if tail is not None else 0
    return b"".join(read_chunks(path, start=start, raw=True)).decode()


class TestTail:
    @pytest.mark.parametrize("lines", [0, 1, 3, 10])
    def test_tail_matches_splitlines(self, tmp_path: Path, lines: int) -> None:
        log = tmp_path / "run.log"
        log.write_text("".join(f"line {i}\n" for i in range(5)))
        expected = [f"line {i}" for i in range(5)][-lines:] if lines else []
        assert read_log(log, lines).splitlines() == expected

    def test_tail_crosses_read_blocks(self, tmp_path: Path) -> None:
        log = tmp_path / "big.log"
        rows = [f"{i:06d} " + "x" * 200 for i in range(2000)]  # ~400 kB, several blocks
        log.write_text("\n".join(rows))  # no trailing newline
        assert tail_bytes(log, 700).decode().splitlines() == rows[-700:]

    def test_missing_log_is_empty(self, tmp_path: Path) -> None:
        assert read_log(tmp_path / "none.log", None) == ""
        assert read_log(tmp_path / "none.log", 5) == ""


class TestClassifyFailure:
    def write(self, tmp_path: Path, text: str) -> Path:
        log = tmp_path / "run.log"
        log.write_text(text)
        return log

    def test_trainer_error_line_wins(self, tmp_path: Path) -> None:
        log = self.write(
            tmp_path,
            'noise\n(task, pid=1) ainfinity-error {"code":"nan_loss","msg":"loss is nan"}\n',
        )
        assert classify_failure(log, 1) == "nan_loss: loss is nan"

    def test_known_patterns_in_tracebacks(self, tmp_path: Path) -> None:
        log = self.write(tmp_path, "torch.OutOfMemoryError: CUDA out of memory.\n")
        assert classify_failure(log, 1).startswith("cuda_oom:")
        log = self.write(tmp_path, "RuntimeError: NCCL error in: ...\n")
        assert classify_failure(log, 1).startswith("nccl_error:")

    def test_unknown_failures_say_how_and_show_the_last_line(self, tmp_path: Path) -> None:
        log = self.write(tmp_path, "Traceback ...\nValueError: boom\n\n")
        assert classify_failure(log, 3) == (
            "unknown: the job's process exited with status 3; last output: ValueError: boom"
        )
        assert "killed by signal 15" in classify_failure(log, -15)
        assert "without recording an exit status" in classify_failure(log, None)

    @pytest.mark.parametrize("returncode", [-9, 137])
    def test_sigkill_points_at_the_memory_killer_and_the_memory_seen(
        self, tmp_path: Path, returncode: int
    ) -> None:
        log = self.write(tmp_path, "step 3/9 | loss 2.0\n")
        reason = classify_failure(log, returncode, memory_bytes=3 * 2**30 // 2)
        assert reason.startswith("killed: the training process was killed with SIGKILL")
        assert "out-of-memory killer" in reason
        assert reason.endswith("it used 1.50 GiB of memory when last seen")
        assert "when last seen" not in classify_failure(log, returncode)


def record(step: int, **values: float) -> str:
    return json.dumps({"step": step, "time": "2026-11-23T00:00:00Z", **values})


class TestMetrics:
    def test_a_resumed_runs_redone_steps_replace_the_first_ones(self, tmp_path: Path) -> None:
        # Steps 1-3 logged, step 2 evaluated, preempted; resumed from step 1's checkpoint.
        lines = [
            record(1, loss=3.0),
            record(2, loss=2.0),
            record(2, eval_loss=2.5),
            record(3, loss=1.9),
            "{torn",
            record(2, loss=2.1),
            record(2, eval_loss=2.6),
            record(3, loss=1.8),
        ]
        path = tmp_path / "metrics.jsonl"
        path.write_text("\n".join(lines) + "\n")

        metrics = read_metrics(path)

        assert [(m.step, m.loss, m.eval_loss) for m in metrics] == [
            (1, 3.0, None),
            (2, 2.1, None),
            (2, None, 2.6),
            (3, 1.8, None),
        ]
        train, evaluation = latest_metrics(path)
        assert train is not None and (train.step, train.loss) == (3, 1.8)
        assert evaluation is not None and evaluation.eval_loss == 2.6

    def test_failure_log_leaves_metric_lines_out(self, tmp_path: Path) -> None:
        log = tmp_path / "run.log"
        log.write_text(
            "loading\n"
            + "".join(f"ainfinity-metric {record(i, loss=1.0)}\n" for i in range(50))
            + "Traceback (most recent call last):\n  boom\n\nRuntimeError: boom\n"
        )

        assert failure_log(log, lines=3) == [
            "Traceback (most recent call last):",
            "  boom",
            "RuntimeError: boom",
        ]
