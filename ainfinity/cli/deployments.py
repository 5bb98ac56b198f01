"""`ainfinity deployments ...`: serve a model from replicas of its own, and what it costs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from ainfinity.cli import render
from ainfinity.cli.context import connect
from ainfinity.schema.deployment import Deployment

app = typer.Typer(
    help="Deployments: a model on dedicated replicas (SkyServe) or pinned on this server.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The deployment's name.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.2f}"


def deployments_table(deployments: Iterable[Deployment]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "STATUS", "MODEL", "READY", "ENDPOINT", "$/H", "COST", "CREATED"):
        table.add_column(column, no_wrap=True)
    for d in deployments:
        live = [r for r in d.replicas if r.ended_at is None]
        ready = sum(1 for r in live if r.status == "READY")
        table.add_row(
            d.name,
            d.status.value,
            d.model,
            f"{ready}/{len(live)}",
            d.endpoint or "—",
            _usd(d.cost_per_hour),
            _usd(d.cost_to_date),
            render.when(d.created_at),
        )
    return table


@app.command(name="list")
def list_deployments(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Deployments, newest first (the first 100)."""
    with connect(ctx) as client:
        page = client.list_deployments_page(limit=100)
    if as_json:
        render.print_json(page.data)
    else:
        render.show(deployments_table(page.data))


@app.command()
def create(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model id to serve.", show_default=False)],
    name: Annotated[str | None, typer.Option(help="The deployment's name.")] = None,
    executor: Annotated[str | None, typer.Option(help="local or skypilot.")] = None,
    accelerators: Annotated[str | None, typer.Option(help="Per replica, e.g. L4:1.")] = None,
    cloud: Annotated[str | None, typer.Option()] = None,
    spot: Annotated[bool, typer.Option("--spot", help="Spot replicas.")] = False,
    replicas: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Deploy a model; prints the deployment (PENDING)."""
    body: dict[str, object] = {"model": model}
    resources: dict[str, object] = {}
    for key, value in (("accelerators", accelerators), ("cloud", cloud)):
        if value is not None:
            resources[key] = value
    if spot:
        resources["use_spot"] = True
    if replicas is not None:
        body["replicas"] = replicas
    for key, text in (("name", name), ("executor", executor)):
        if text is not None:
            body[key] = text
    if resources:
        body["resources"] = resources
    with connect(ctx) as client:
        render.print_json(client.create_deployment(body))


@app.command()
def get(ctx: typer.Context, name: Name) -> None:
    """One deployment: status, replicas, endpoint, costs."""
    with connect(ctx) as client:
        render.print_json(client.get_deployment(name))


@app.command()
def update(
    ctx: typer.Context,
    name: Name,
    model: Annotated[str, typer.Argument(help="The model to move to.", show_default=False)],
) -> None:
    """A rolling update to another model."""
    with connect(ctx) as client:
        render.print_json(client.update_deployment(name, model))


@app.command()
def delete(ctx: typer.Context, name: Name) -> None:
    """Tear it down (SkyServe's down); the record stays, STOPPED."""
    with connect(ctx) as client:
        print(client.delete_deployment(name).status.value)


@app.command()
def logs(
    ctx: typer.Context,
    name: Name,
    target: Annotated[str, typer.Option(help="controller, load_balancer or replica.")] = (
        "controller"
    ),
    replica: Annotated[int | None, typer.Option(help="With --target replica.")] = None,
) -> None:
    """The controller's, load balancer's or a replica's log."""
    with connect(ctx) as client:
        print(client.deployment_logs(name, target=target, replica=replica), end="")


@app.command()
def task(ctx: typer.Context, name: Name) -> None:
    """The rendered SkyServe task (YAML); `sky serve up` runs it by hand."""
    with connect(ctx) as client:
        print(client.deployment_task(name), end="")
