"""`ainfinity jobs watch NAME`: a progress bar until the job ends; the exit status says how.

It polls `GET /jobs/{name}` (one small request a second): that works through any proxy and
picks up where it left off after a server restart, which a stream would not.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ainfinity.cli import render
from ainfinity.cli.context import connect
from ainfinity.schema.job import Job, JobStatus

EXIT_SUCCEEDED = 0
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_PAUSED = 5
EXIT_CODES = {
    JobStatus.SUCCEEDED: EXIT_SUCCEEDED,
    JobStatus.FAILED: EXIT_FAILED,
    JobStatus.CANCELLED: EXIT_CANCELLED,
    JobStatus.PAUSED: EXIT_PAUSED,
}


def watch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job's name.", show_default=False)],
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between two looks at the job.")
    ] = 1.0,
) -> None:
    """Show a job's progress (step, loss, eval loss, ETA) until it ends (or pauses: exit 5).

    Exit status: 0 SUCCEEDED, 3 FAILED, 4 CANCELLED, 5 PAUSED, 1 an API or connection error."""
    out = render.console()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[status]}"),
        BarColumn(),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("eval {task.fields[eval_loss]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=out,
    )
    with connect(ctx) as client, progress:
        job = client.get_job(name)
        task = progress.add_task(job.name, **_fields(job))
        seen: JobStatus | None = None
        while True:
            if job.status != seen:
                progress.console.print(
                    f"{render.when(job.updated_at)}  {render.status_text(job.status)}"
                )
                seen = job.status
            progress.update(task, **_fields(job))
            if not job.status.is_active:
                break
            time.sleep(interval)
            job = client.get_job(name)
    if job.failure_reason:
        out.print(f"failure: {job.failure_reason}", markup=False)
    raise typer.Exit(EXIT_CODES[job.status])


def _fields(job: Job) -> dict[str, Any]:
    progress = job.progress
    fields: dict[str, Any] = {
        "status": render.status_text(job.status),
        "step": render.step_text(job),
        "loss": render.number(progress.loss if progress else None),
        "eval_loss": render.number(progress.eval_loss if progress else None),
        "eta": _duration(progress.eta_seconds if progress else None),
        "total": progress.total_steps if progress and progress.total_steps else None,
        "completed": progress.step if progress else 0,
    }
    if job.status == JobStatus.SUCCEEDED and fields["total"]:
        fields["completed"] = fields["total"]
    return fields


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
