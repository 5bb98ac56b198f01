"""A job's `progress`, derived from the newest metric records its run wrote."""

from __future__ import annotations

from ainfinity.schema.activity import Metric
from ainfinity.schema.job import Progress


def progress_from(
    train: Metric | None, evaluation: Metric | None, *, previous: Progress | None
) -> Progress | None:
    """Step, percent and ETA from the newest training record; eval loss from the newest eval.

    The ETA is the remaining steps times the step time the trainer measured over its last
    logging window, as of that record: fresh records keep it current while the job runs.
    """
    if train is None:
        return previous
    total = train.total_steps
    percent = eta = None
    if total:
        remaining = max(total - train.step, 0)
        percent = round(100.0 * min(train.step, total) / total, 2)
        if train.step_time_seconds is not None:
            eta = round(remaining * train.step_time_seconds, 1)
    eval_loss = evaluation.eval_loss if evaluation is not None else None
    if eval_loss is None and previous is not None:
        # The eval record may have scrolled out of the window read; keep the last one seen.
        eval_loss = previous.eval_loss
    return Progress(
        step=train.step,
        total_steps=total,
        percent=percent,
        loss=train.loss,
        eval_loss=eval_loss,
        eta_seconds=eta,
        tokens_per_second=train.tokens_per_second,
    )
