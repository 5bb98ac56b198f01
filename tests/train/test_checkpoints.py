"""Listing, resuming from and pruning checkpoints, on real directories left in odd states."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ainfinity.train.checkpoints import (
    MARKER_NAME,
    discard_incomplete_after,
    latest_complete_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    write_marker,
)


def checkpoint(output_dir: Path, step: int, *, complete: bool = True, **losses: float) -> Path:
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        write_marker(path, step=step, loss=losses.get("loss"), eval_loss=losses.get("eval_loss"))
    return path


def steps(output_dir: Path) -> list[tuple[int, bool]]:
    return [(info.step, info.complete) for info in list_checkpoints(output_dir)]


class TestListCheckpoints:
    def test_reads_steps_losses_and_save_time_from_the_marker(self, tmp_path: Path) -> None:
        before = datetime.now(timezone.utc)
        checkpoint(tmp_path, 5, loss=1.5, eval_loss=1.25)

        [info] = list_checkpoints(tmp_path)

        assert (info.name, info.path, info.step) == ("checkpoint-5", tmp_path / "checkpoint-5", 5)
        assert (info.loss, info.eval_loss, info.complete) == (1.5, 1.25, True)
        assert before <= info.saved_at <= datetime.now(timezone.utc)

    def test_sorts_by_step_as_a_number(self, tmp_path: Path) -> None:
        for step in (100, 9, 20):
            checkpoint(tmp_path, step)

        assert steps(tmp_path) == [(9, True), (20, True), (100, True)]

    def test_a_directory_without_a_marker_is_incomplete(self, tmp_path: Path) -> None:
        path = checkpoint(tmp_path, 7, complete=False)

        [info] = list_checkpoints(tmp_path)

        assert (info.complete, info.loss, info.eval_loss) == (False, None, None)
        assert info.saved_at == datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)

    @pytest.mark.parametrize(
        "marker",
        [
            b"",
            b'{"step": 3, "loss": 1.0',  # cut off mid-write
            b"\xff\xfe not utf-8",
            b"[3]",
            b'{"loss": 1.0}',
            b'{"step": 4}',  # copied from another checkpoint
            b'{"step": "3"}',
        ],
    )
    def test_a_damaged_marker_makes_the_checkpoint_incomplete(
        self, tmp_path: Path, marker: bytes
    ) -> None:
        path = checkpoint(tmp_path, 3, complete=False)
        (path / MARKER_NAME).write_bytes(marker)

        assert steps(tmp_path) == [(3, False)]
        assert latest_complete_checkpoint(tmp_path) is None

    def test_ignores_fields_of_the_wrong_type_in_a_marker(self, tmp_path: Path) -> None:
        path = checkpoint(tmp_path, 3, complete=False)
        marker = {"step": 3, "loss": "low", "eval_loss": True, "saved_at": "yesterday"}
        (path / MARKER_NAME).write_text(json.dumps(marker))

        [info] = list_checkpoints(tmp_path)

        assert (info.complete, info.loss, info.eval_loss) == (True, None, None)
        assert info.saved_at.tzinfo is not None

    def test_skips_what_is_not_a_checkpoint_directory(self, tmp_path: Path) -> None:
        (tmp_path / "checkpoint-1").write_text("a file, not a directory")
        (tmp_path / "checkpoint-abc").mkdir()
        (tmp_path / "checkpoint--2").mkdir()
        (tmp_path / "checkpoint-3.tmp").mkdir()
        (tmp_path / "runs").mkdir()
        (tmp_path / "checkpoint-4").symlink_to(tmp_path / "missing")
        checkpoint(tmp_path, 5)

        assert steps(tmp_path) == [(5, True)]

    def test_a_missing_output_dir_has_no_checkpoints(self, tmp_path: Path) -> None:
        assert list_checkpoints(tmp_path / "missing") == []
        assert list_checkpoints(tmp_path / "file") == []
        assert latest_complete_checkpoint(tmp_path / "missing") is None


class TestLatestCompleteCheckpoint:
    def test_skips_a_newer_incomplete_checkpoint(self, tmp_path: Path) -> None:
        checkpoint(tmp_path, 10)
        older = checkpoint(tmp_path, 20)
        checkpoint(tmp_path, 30, complete=False)

        assert latest_complete_checkpoint(tmp_path) == older


class TestWriteMarker:
    def test_leaves_no_temporary_file_and_refuses_non_finite_losses(self, tmp_path: Path) -> None:
        path = checkpoint(tmp_path, 2, complete=False)

        write_marker(path, step=2, loss=float("nan"), eval_loss=float("inf"))

        assert sorted(p.name for p in path.iterdir()) == [MARKER_NAME, "model.safetensors"]
        [info] = list_checkpoints(tmp_path)
        assert (info.complete, info.loss, info.eval_loss) == (True, None, None)


class TestPruneCheckpoints:
    def test_keeps_the_newest_complete_ones_and_newer_incomplete_ones(self, tmp_path: Path) -> None:
        for step in (10, 20, 30):
            checkpoint(tmp_path, step)
        checkpoint(tmp_path, 15, complete=False)
        checkpoint(tmp_path, 40, complete=False)

        deleted = prune_checkpoints(tmp_path, keep=2)

        assert sorted(path.name for path in deleted) == ["checkpoint-10", "checkpoint-15"]
        assert steps(tmp_path) == [(20, True), (30, True), (40, False)]

    def test_keeps_every_complete_one_without_a_limit(self, tmp_path: Path) -> None:
        for step in (10, 20):
            checkpoint(tmp_path, step)
        checkpoint(tmp_path, 5, complete=False)

        prune_checkpoints(tmp_path, keep=None)

        assert steps(tmp_path) == [(10, True), (20, True)]

    def test_deletes_nothing_before_a_checkpoint_is_complete(self, tmp_path: Path) -> None:
        checkpoint(tmp_path, 10, complete=False)

        assert prune_checkpoints(tmp_path, keep=1) == []
        assert steps(tmp_path) == [(10, False)]

    def test_refuses_to_keep_none(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError):
            prune_checkpoints(tmp_path, keep=0)


def test_discard_incomplete_after_removes_only_newer_incomplete_ones(tmp_path: Path) -> None:
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 5, complete=False)
    checkpoint(tmp_path, 20, complete=False)

    deleted = discard_incomplete_after(tmp_path, 10)

    assert [path.name for path in deleted] == ["checkpoint-20"]
    assert steps(tmp_path) == [(5, False), (10, True)]
