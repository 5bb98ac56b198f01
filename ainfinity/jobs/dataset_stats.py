"""A dataset's size and token lengths, measured with the job's own tokenizer.

Rows and format come from validation at `POST /jobs`. Token lengths need the tokenizer, so
they are measured after the 202 by the inference worker (the API process never imports
transformers): `token_stats` reads `pending` until then. The trainer tokenizes the same way
(`ainfinity.train` does both), so the figures are what training will see.

A dataset the tokenizer cannot render (a chat template that fails on a row) fails its job
here if it is still queued, with the same `invalid_dataset` reason the trainer would give.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from ainfinity.exceptions import AinfinityError, JobNotFound
from ainfinity.jobs.inputs import ResolvedDataset
from ainfinity.jobs.transitions import transition
from ainfinity.schema.activity import Event
from ainfinity.schema.job import DatasetStats, JobRecord, JobStatus
from ainfinity.schema.training_options import Hyperparameters
from ainfinity.store.job_store import JobStore

logger = logging.getLogger("ainfinity.service")

# Asks the worker for one dataset's figures: a `TokenStatsRequest` in, a `TokenStatsResult` out.
Measure = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def initial_stats(
    dataset: ResolvedDataset, *, hyperparameters: Hyperparameters, measure_tokens: bool
) -> DatasetStats | None:
    """Rows and format now; token figures `pending` (or `unavailable`). None for a bucket."""
    report = dataset.report
    if report is None:
        return None
    return DatasetStats(
        rows=report.rows,
        format=report.format,
        max_seq_length=hyperparameters.max_seq_length,
        token_stats="pending" if measure_tokens else "unavailable",
    )


class TokenStatsFiller:
    """Measures queued jobs' datasets one at a time, in the background."""

    def __init__(self, *, store: JobStore, measure: Measure) -> None:
        self.store = store
        self.measure = measure
        self._queue: asyncio.Queue[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enqueue(self, name: str) -> None:
        """Ask for a job's figures; safe from any thread."""
        if self._loop is not None and self._queue is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                self._loop.call_soon_threadsafe(self._queue.put_nowait, name)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        # Jobs accepted just before a restart still wait for their figures.
        for name in self.store.active_names():
            self._queue.put_nowait(name)
        while True:
            name = await self._queue.get()
            try:
                await self._fill(name)
            except AinfinityError as exc:
                logger.warning("token statistics not measured: %s", exc, extra={"job": name})
                await self._give_up(name, reason=exc.detail_msg)
            except Exception:
                logger.exception("token statistics failed", extra={"job": name})
                await self._give_up(name, reason="internal error")

    async def _fill(self, name: str) -> None:
        try:
            record = self.store.get(name)
        except (JobNotFound, ValidationError):
            return
        figures: dict[str, dict[str, Any]] = {}
        for field, path in (
            ("dataset_stats", record.spec.dataset),
            ("validation_dataset_stats", record.spec.validation_dataset),
        ):
            stats: DatasetStats | None = getattr(record, field)
            if stats is None or stats.token_stats != "pending" or path is None:
                continue
            trained_from = record.training_model
            figures[field] = await self.measure(
                {
                    "dataset": path,
                    "tokenizer": trained_from.tokenizer if trained_from else record.spec.model,
                    "max_seq_length": record.spec.hyperparameters.max_seq_length,
                    "completion_only_loss": record.spec.hyperparameters.completion_only_loss,
                }
            )
        if figures:
            await asyncio.to_thread(self._store, name, figures)

    def _store(self, name: str, figures: dict[str, dict[str, Any]]) -> None:
        def change(record: JobRecord) -> list[Event] | None:
            invalid = None
            for field, result in figures.items():
                stats: DatasetStats | None = getattr(record, field)
                if stats is None or stats.token_stats != "pending":
                    continue
                if result.get("status") == "measured":
                    update = {
                        "token_stats": "measured",
                        "token_min": result["min"],
                        "token_mean": result["mean"],
                        "token_p95": result["p95"],
                        "token_max": result["max"],
                        "truncated_rows": result["truncated_rows"],
                    }
                else:
                    update = {"token_stats": "unavailable"}
                    if result.get("status") == "invalid":
                        which = (
                            "Validation dataset" if field.startswith("validation") else "Dataset"
                        )
                        invalid = f"{which} cannot be trained on: {result.get('reason')}"
                setattr(record, field, stats.model_copy(update=update))
            if invalid is not None and record.status == JobStatus.PENDING:
                record.failure_reason = f"invalid_dataset: {invalid}"
                return [transition(record, JobStatus.FAILED, message=record.failure_reason)]
            return []

        with contextlib.suppress(JobNotFound):
            self.store.update(name, change)

    async def _give_up(self, name: str, *, reason: str) -> None:
        def change(record: JobRecord) -> list[Event] | None:
            changed = False
            for field in ("dataset_stats", "validation_dataset_stats"):
                stats: DatasetStats | None = getattr(record, field)
                if stats is not None and stats.token_stats == "pending":
                    setattr(record, field, stats.model_copy(update={"token_stats": "unavailable"}))
                    changed = True
            return [] if changed else None

        with contextlib.suppress(JobNotFound, ValidationError):
            await asyncio.to_thread(self.store.update, name, change)
