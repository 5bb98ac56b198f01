"""OpenAI's hyperparameters, `"auto"` values resolved, turned into a native job's.

The rules (docs/OPENAI.md says the same):
- `n_epochs: auto`: 3, raised so that at least 100 examples are seen (at most 25 epochs) and
  lowered so that at most 25,000 are (at least 1): OpenAI's published defaults.
- `batch_size: auto`: 0.2 % of the training rows, rounded up, between 1 and 32.
- `learning_rate_multiplier: auto`: 1. The learning rate is the multiplier times the method's
  base rate: 2e-5 for supervised, 1e-5 for dpo (the native defaults for full weights).
- `beta: auto`: 0.1.
- A checkpoint is saved at the end of every epoch and the newest 3 are kept (OpenAI keeps
  the last 3 epochs'); with a validation file, it is evaluated at each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ainfinity.schema.openai_fine_tuning import (
    DpoHyperparameters,
    FineTuningJobCreate,
    SupervisedHyperparameters,
)

DEFAULT_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
BATCH_SHARE = 0.002
MAX_AUTO_BATCH = 32
BASE_LEARNING_RATE = {"supervised": 2e-5, "dpo": 1e-5}
DEFAULT_BETA = 0.1
KEPT_CHECKPOINTS = 3


@dataclass(frozen=True)
class Resolved:
    method: str
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE[self.method] * self.learning_rate_multiplier

    def steps_per_epoch(self, rows: int) -> int:
        """Optimizer steps in one pass over `rows` on one device."""
        return max(1, math.ceil(rows / self.batch_size))


def auto_epochs(rows: int) -> int:
    if rows * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / max(rows, 1)))
    if rows * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // rows)
    return DEFAULT_EPOCHS


def auto_batch_size(rows: int) -> int:
    return min(MAX_AUTO_BATCH, max(1, math.ceil(rows * BATCH_SHARE)))


def requested(request: FineTuningJobCreate) -> SupervisedHyperparameters:
    """The values asked for: the top-level (deprecated) block, overridden by `method`'s."""
    merged = (request.hyperparameters or SupervisedHyperparameters()).model_dump(exclude_unset=True)
    method = request.method
    chosen = None
    if method is not None:
        block = method.dpo if method.type == "dpo" else method.supervised
        chosen = block.hyperparameters if block is not None else None
    if chosen is not None:
        merged.update(chosen.model_dump(exclude_unset=True))
    return DpoHyperparameters.model_validate(merged)


def resolve(request: FineTuningJobCreate, *, rows: int) -> Resolved:
    """Every `"auto"` replaced by its value for a training file of `rows` rows."""
    method = request.method.type if request.method is not None else "supervised"
    asked = requested(request)
    beta = asked.beta if isinstance(asked, DpoHyperparameters) else "auto"
    return Resolved(
        method=method,
        n_epochs=auto_epochs(rows) if asked.n_epochs == "auto" else asked.n_epochs,
        batch_size=auto_batch_size(rows) if asked.batch_size == "auto" else asked.batch_size,
        learning_rate_multiplier=(
            1.0
            if asked.learning_rate_multiplier == "auto"
            else float(asked.learning_rate_multiplier)
        ),
        beta=(DEFAULT_BETA if beta == "auto" else float(beta)) if method == "dpo" else None,
    )
