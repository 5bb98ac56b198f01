"""`ainfinity jobs ...`: launch, list, inspect, follow, cancel and delete jobs."""

from __future__ import annotations

import itertools
import sys
from typing import Annotated

import typer

from ainfinity.cli import render
from ainfinity.cli.context import EXIT_USAGE, connect, fail
from ainfinity.cli.spec import SpecError, load_spec
from ainfinity.cli.watch import watch
from ainfinity.schema.job import JobStatus

app = typer.Typer(
    help="Launch, list, watch, cancel and delete fine-tuning jobs.", no_args_is_help=True
)
app.command(name="watch")(watch)

JobName = Annotated[str, typer.Argument(help="The job's name.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def launch(
    ctx: typer.Context,
    file: Annotated[str, typer.Option("--file", "-f", help="Job spec, YAML or JSON (`-`: stdin).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field: dotted.path=value, value read as YAML "
            "(e.g. hyperparameters.learning_rate=1e-4). Repeatable.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The job's name (overrides the file's).")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key launches the job once.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Launch a job from a spec file."""
    try:
        spec = load_spec(file, overrides or [], name)
    except SpecError as exc:
        fail("invalid_spec_file", str(exc), exit_code=EXIT_USAGE)
    with connect(ctx) as client:
        job = client.create_job(spec, idempotency_key=idempotency_key)
    if as_json:
        render.print_json(job)
    else:
        render.show(render.job_detail(job))


@app.command(name="list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        JobStatus | None, typer.Option(help="Only jobs in this status.", case_sensitive=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Jobs, newest first."""
    with connect(ctx) as client:
        found = list(
            itertools.islice(client.list_jobs(status, page_size=min(limit + 1, 100)), limit + 1)
        )
    jobs, more = found[:limit], len(found) > limit
    if as_json:
        render.print_json(jobs)
        return
    render.show(render.jobs_table(jobs))
    if more:
        print(f"(more jobs not shown; raise --limit above {limit})")


@app.command()
def get(ctx: typer.Context, name: JobName, as_json: AsJson = False) -> None:
    """One job: its status, progress and spec."""
    with connect(ctx) as client:
        job = client.get_job(name)
    if as_json:
        render.print_json(job)
    else:
        render.show(render.job_detail(job))


@app.command()
def logs(
    ctx: typer.Context,
    name: JobName,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    tail: Annotated[int | None, typer.Option(min=0, help="Only the last N lines.")] = None,
) -> None:
    """The job's combined stdout and stderr."""
    with connect(ctx) as client:
        if not follow:
            sys.stdout.write(client.logs(name, tail=tail))
            return
        for line in client.follow_logs(name, tail=tail):
            print(line, flush=True)


@app.command()
def metrics(ctx: typer.Context, name: JobName, as_json: AsJson = False) -> None:
    """Training metrics, one row per logging step (eval rows carry the eval loss)."""
    with connect(ctx) as client:
        records = client.metrics(name)
    if as_json:
        render.print_json(records)
    else:
        render.show(render.metrics_table(records))


@app.command()
def cancel(
    ctx: typer.Context,
    name: JobName,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key acts once.")
    ] = None,
) -> None:
    """Stop a job: a queued one ends at once, a running one goes CANCELLING -> CANCELLED."""
    with connect(ctx) as client:
        job = client.cancel_job(name, idempotency_key=idempotency_key)
    print(f"{job.name} {job.status.value}")


@app.command()
def pause(ctx: typer.Context, name: JobName) -> None:
    """Save a checkpoint at the next step's end and stop: PAUSING -> PAUSED."""
    with connect(ctx) as client:
        job = client.pause_job(name)
    print(f"{job.name} {job.status.value}")


@app.command()
def resume(ctx: typer.Context, name: JobName) -> None:
    """Relaunch a paused job from its newest complete checkpoint."""
    with connect(ctx) as client:
        job = client.resume_job(name)
    print(f"{job.name} {job.status.value}")


@app.command()
def delete(ctx: typer.Context, name: JobName) -> None:
    """Remove a finished job's record and files."""
    with connect(ctx) as client:
        client.delete_job(name)
    print(f"{name} deleted")
