"""Where the client finds its server and key when they are not passed in."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from ainfinity import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
# The file a server writes its generated key to (`$AINFINITY_HOME/api_key`).
KEY_FILE_NAME = "api_key"
DEFAULT_TIMEOUT = httpx.Timeout(30.0)
# A followed log may stay silent for as long as the job does.
FOLLOW_TIMEOUT = httpx.Timeout(30.0, read=None)
# A chat answer waits for its model to load first, and the server bounds each generation
# (and each token of a stream) itself.
GENERATE_TIMEOUT = httpx.Timeout(30.0, read=600.0)


def resolve_url(url: str | None) -> str:
    """`url`, else `AINFINITY_URL`, else the address `ainfinity serve` listens on."""
    return (url or os.environ.get("AINFINITY_URL") or DEFAULT_URL).rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """`api_key`, else `AINFINITY_API_KEY`, else the key a local server generated.

    The last one lets `ainfinity jobs list` work next to `make serve` with nothing set."""
    if api_key:
        return api_key
    from_env = os.environ.get("AINFINITY_API_KEY")
    if from_env:
        return from_env
    home = Path(os.environ.get("AINFINITY_HOME") or ".ainfinity").expanduser()
    try:
        return (home / KEY_FILE_NAME).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"ainfinity-client/{__version__}"}
    if api_key:
        headers["X-API-Key"] = api_key
    return headers
