"""Pausing a run: on SIGUSR1 (the control plane's pause) or SIGTERM once training runs (a
cancel, or a cloud's notice), finish the current step, save a complete checkpoint, and stop.

The signal handler only sets a flag. At the end of each step every rank shares its flag
(a max over ranks), so all ranks stop at the same step and save the same checkpoint, whichever
of them the signal reached first. A relaunch resumes from that checkpoint, as after a
preemption.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

PAUSE_SIGNAL = signal.SIGUSR1


class PauseRequest:
    """Set by a signal; read at step ends."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self, signum: int) -> None:
        def handle(number: int, frame: FrameType | None) -> None:
            self.event.set()

        signal.signal(signum, handle)


class PauseCallback(TrainerCallback):
    """Turns a pause request into a checkpoint and the end of training."""

    def __init__(self, request: PauseRequest) -> None:
        self.request = request
        self.paused_at: int | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # From here on a SIGTERM stops at a step's end with a checkpoint, instead of at once.
        self.request.install(signal.SIGTERM)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not _any_rank(self.request.event.is_set()):
            return
        control.should_save = True
        control.should_training_stop = True
        self.paused_at = state.global_step


def _any_rank(flag: bool) -> bool:
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes <= 1:
        return flag
    import torch
    from accelerate.utils import reduce

    shared = reduce(torch.tensor([int(flag)], device=state.device), reduction="sum")
    return bool(shared.item())
