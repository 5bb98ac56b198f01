"""The `ainfinity` command: `serve` runs the API; `jobs ...`, `models ...` and `chat` talk
to one.

    ainfinity serve
    ainfinity jobs launch -f job.yaml --set hyperparameters.max_steps=60
    ainfinity jobs watch NAME        # exit status 0 only if the job SUCCEEDED
    ainfinity models list
    ainfinity chat ft:tiny-random-llama:NAME

`--url` / `AINFINITY_URL` and `--api-key` / `AINFINITY_API_KEY` pick the server; without a
key, the one a local server generated (`$AINFINITY_HOME/api_key`) is used.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ainfinity import __version__
from ainfinity.cli import deployments, jobs, models
from ainfinity.cli.chat import chat
from ainfinity.cli.context import Connection
from ainfinity.cli.serve import serve

app = typer.Typer(
    name="ainfinity",
    help="Control plane for LLM fine-tuning: serve the API, launch and watch jobs, chat with "
    "the models they produce.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(serve)
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(deployments.app, name="deployments")
app.command()(chat)


def _print_version(value: bool) -> None:
    if value:
        print(f"ainfinity {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="AINFINITY_URL",
            help="The server (default: http://127.0.0.1:8000).",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="AINFINITY_API_KEY",
            help="API key (default: the local server's, in $AINFINITY_HOME/api_key).",
            show_default=False,
            show_envvar=True,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    ctx.obj = Connection(url=url, api_key=api_key)


def main() -> None:
    app(prog_name="ainfinity")
