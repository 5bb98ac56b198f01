"""How jobs, metrics and models look on a terminal: plain tables (easy to grep), or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from ainfinity.schema.activity import Metric
from ainfinity.schema.job import Job, JobStatus
from ainfinity.schema.model import Model

STATUS_STYLES = {
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.CANCELLING: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.RECOVERING: "magenta",
}


def console() -> Console:
    out = Console(highlight=False)
    # Piped output is read by scripts and people alike: never fold a row at 80 columns.
    return out if out.is_terminal else Console(highlight=False, width=240)


def show(renderable: RenderableType) -> None:
    """Print a table without the padding rich leaves at the end of each line."""
    out = console()
    with out.capture() as captured:
        out.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_json(data: BaseModel | Sequence[BaseModel]) -> None:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    else:
        payload = [item.model_dump(mode="json") for item in data]
    print(json.dumps(payload, indent=2))


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def status_text(status: JobStatus) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status.value}[/]" if style else status.value


def step_text(job: Job) -> str:
    progress = job.progress
    if progress is None:
        return "-"
    return f"{progress.step}/{progress.total_steps}" if progress.total_steps else str(progress.step)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = _table("NAME", "STATUS", "EXECUTOR", "MODEL", "STEP", "LOSS", "CREATED")
    for job in jobs:
        table.add_row(
            escape(job.name),
            status_text(job.status),
            escape(job.executor),
            escape(job.spec.model),
            step_text(job),
            number(job.progress.loss if job.progress else None),
            when(job.created_at),
        )
    return table


def job_detail(job: Job) -> Table:
    """One job as `field  value` lines."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    progress = job.progress
    rows: list[tuple[str, str]] = [
        ("name", escape(job.name)),
        ("status", status_text(job.status)),
        ("executor", escape(job.executor)),
        ("model", escape(job.spec.model)),
        ("dataset", escape(job.spec.dataset)),
        ("method", job.spec.method),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
    if progress is not None:
        rows += [
            ("step", step_text(job)),
            ("loss", number(progress.loss)),
            ("eval loss", number(progress.eval_loss)),
        ]
    if job.failure_reason:
        rows.append(("failure", escape(job.failure_reason)))
    rows.append(("output", escape(job.output_dir)))
    if job.fine_tuned_model:
        rows.append(("fine-tuned model", escape(job.fine_tuned_model)))
    for field, value in rows:
        grid.add_row(field, value)
    return grid


def metrics_table(metrics: Iterable[Metric]) -> Table:
    table = _table("STEP", "EPOCH", "LOSS", "EVAL LOSS", "LR", "GRAD NORM", "TOKENS/S", "TIME")
    for metric in metrics:
        table.add_row(
            str(metric.step),
            number(metric.epoch, 3),
            number(metric.loss),
            number(metric.eval_loss),
            number(metric.learning_rate, 3),
            number(metric.grad_norm, 3),
            number(metric.tokens_per_second, 5),
            when(metric.time),
        )
    return table


def size(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1000:
        return f"{value} B"
    amount = float(value)
    for unit in ("KB", "MB"):
        amount /= 1000
        if round(amount, 1) < 1000:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1000:.1f} GB"


def models_table(models: Iterable[Model]) -> Table:
    table = _table("ID", "METHOD", "BASE", "JOB", "TRAIN LOSS", "EVAL LOSS", "SIZE", "CREATED")
    for model in models:
        metrics = model.metrics
        table.add_row(
            escape(model.id),
            model.method or "base",
            escape(model.base_model or "-"),
            escape(model.job or "-"),
            number(metrics.train_loss if metrics else None),
            number(metrics.eval_loss if metrics else None),
            size(model.size_bytes),
            when(model.created_at),
        )
    return table


def model_detail(model: Model) -> Table:
    """One model as `field  value` lines: what it is, where it came from, how it did."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("id", escape(model.id)),
        ("method", model.method or "base"),
        ("base model", escape(model.base_model or "-")),
        ("job", escape(model.job or "-")),
        ("owner", escape(model.owner or "-")),
        ("created", when(model.created_at)),
        ("path", escape(model.path or "-")),
        ("size", size(model.size_bytes)),
    ]
    if model.metrics is not None:
        rows += [
            ("train loss", number(model.metrics.train_loss)),
            ("eval loss", number(model.metrics.eval_loss)),
        ]
    lineage = model.lineage
    if lineage is not None:
        rows += [
            ("dataset", escape(lineage.dataset)),
            ("dataset sha256", lineage.dataset_sha256 or "-"),
        ]
        if lineage.validation_dataset:
            rows += [
                ("validation", escape(lineage.validation_dataset)),
                ("validation sha256", lineage.validation_dataset_sha256 or "-"),
            ]
        # One line per value (as JSON, as the job was given it): a whole dict on one line
        # would wrap, and wrapped lines are no use to grep.
        for title, values in (("hyperparameters", lineage.hyperparameters), ("lora", lineage.lora)):
            if values is None:
                continue
            rows.append((title, ""))
            rows += [(f"  {name}", escape(json.dumps(value))) for name, value in values.items()]
    for checkpoint in model.checkpoints:
        rows.append(("checkpoint", escape(checkpoint)))
    for field, value in rows:
        grid.add_row(field, value)
    return grid
