"""`ainfinity models ...`: list, inspect and delete the models jobs produced."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from ainfinity.cli import render
from ainfinity.cli.context import connect

app = typer.Typer(
    help="List, inspect and delete models (fine-tuned ones and the base models).",
    no_args_is_help=True,
)

ModelId = Annotated[
    str,
    typer.Argument(
        help="The model's id (ft:<base>:<job>, ft:<base>:<job>:ckpt-<step>, or a base model).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command(name="list")
def list_models(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Models, newest first; the base models come last."""
    with connect(ctx) as client:
        found = list(itertools.islice(client.iter_models(page_size=min(limit + 1, 100)), limit + 1))
    models, more = found[:limit], len(found) > limit
    if as_json:
        render.print_json(models)
        return
    render.show(render.models_table(models))
    if more:
        print(f"(more models not shown; raise --limit above {limit})")


@app.command()
def get(ctx: typer.Context, model_id: ModelId, as_json: AsJson = False) -> None:
    """One model: its lineage (dataset, hyperparameters), metrics and checkpoints."""
    with connect(ctx) as client:
        model = client.get_model(model_id)
    if as_json:
        render.print_json(model)
    else:
        render.show(render.model_detail(model))


@app.command()
def delete(ctx: typer.Context, model_id: ModelId) -> None:
    """Unregister a fine-tuned model and unload it; its job and files stay."""
    with connect(ctx) as client:
        client.delete_model(model_id)
    print(f"{model_id} deleted")
