"""`python -m ainfinity serve`: run the API server with the settings from the environment."""

from __future__ import annotations

import argparse

import uvicorn

from ainfinity.core.config import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ainfinity")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API (AINFINITY_HOST, AINFINITY_PORT, ...)")
    parser.parse_args(argv)
    settings = get_settings()
    uvicorn.run(
        "ainfinity.api.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        # RequestLoggingMiddleware already writes one line per request, with its id.
        access_log=False,
    )


if __name__ == "__main__":
    main()
