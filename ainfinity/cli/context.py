"""What every API command shares: the server to talk to, and how its errors are shown."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

import typer
from rich.console import Console

from ainfinity.client import AinfinityClientError, Client, ValidationFailed

# Exit statuses: 0 done, 1 an API or connection error, 2 a usage error (click's own);
# `jobs watch` adds 3 (the job FAILED) and 4 (it was CANCELLED).
EXIT_ERROR = 1
EXIT_USAGE = 2

_err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Connection:
    """The global `--url` and `--api-key`; None falls back to the client's own defaults."""

    url: str | None
    api_key: str | None


def fail(
    code: str, msg: str, *, exit_code: int = EXIT_ERROR, details: Sequence[str] = ()
) -> NoReturn:
    """Print `error <code>: <msg>` on stderr and exit; no traceback."""
    _err.print(f"error {code}: {msg}", markup=False)
    for line in details:
        _err.print(f"  {line}", markup=False)
    raise typer.Exit(exit_code)


@contextlib.contextmanager
def connect(ctx: typer.Context) -> Iterator[Client]:
    """A client for the command's server; API errors end the command with `fail`."""
    conn: Connection = ctx.obj or Connection(None, None)
    try:
        with Client(conn.url, conn.api_key) as client:
            yield client
    except AinfinityClientError as exc:
        details: list[str] = []
        # The message already names the first failing field; list them when there are more.
        if isinstance(exc, ValidationFailed) and exc.errors and len(exc.errors) > 1:
            for error in exc.errors:
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                details.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error))
        fail(exc.code, exc.msg, details=details)
