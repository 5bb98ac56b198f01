"""Mark each checkpoint complete once every rank has saved it, then prune old ones.

The HF Trainer's own `save_total_limit` deletes older checkpoints before the new one is known
to be whole (with a limit of 1, a preemption at that moment leaves nothing to resume from), so
the trainer runs with it off and this callback prunes, after the marker, instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ainfinity.train.checkpoints import CHECKPOINT_PREFIX, prune_checkpoints, write_marker


def _losses_at(state: TrainerState) -> tuple[float | None, float | None]:
    """The latest training loss, and the evaluation loss of this very step if there was one."""
    loss: float | None = None
    eval_loss: float | None = None
    for entry in reversed(state.log_history):
        if loss is None and "loss" in entry:
            loss = float(entry["loss"])
        if eval_loss is None and "eval_loss" in entry and entry.get("step") == state.global_step:
            eval_loss = float(entry["eval_loss"])
        if loss is not None:
            break
    return loss, eval_loss


class CheckpointMarkerCallback(TrainerCallback):
    """After each checkpoint save: wait for all ranks, write the marker, prune to `keep`."""

    def __init__(self, keep: int | None) -> None:
        self.keep = keep

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Runs on every rank right after the Trainer wrote `checkpoint-<step>`."""
        from accelerate import PartialState

        # Under DeepSpeed each rank writes its own optimizer shard; all must be on disk first.
        PartialState().wait_for_everyone()
        if not state.is_world_process_zero:
            return
        output_dir = Path(str(args.output_dir))
        checkpoint = output_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
        loss, eval_loss = _losses_at(state)
        write_marker(checkpoint, step=state.global_step, loss=loss, eval_loss=eval_loss)
        prune_checkpoints(output_dir, keep=self.keep)
