"""API-key authentication, declared as security schemes so Swagger's Authorize works.

Keys are compared by SHA-256 digest in constant time, against every configured key
(no early exit), and are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ainfinity.core.config import ApiKey
from ainfinity.exceptions import Unauthorized

KEY_FILE_NAME = "api_key"

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="The API key, as `X-API-Key: <key>`.",
)
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="The API key, as `Authorization: Bearer <key>`.",
)


class KeyRing:
    """The configured keys, looked up by the key a request presents."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def identify(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def presented_key(request: Request) -> str | None:
    """The key from `X-API-Key`, or else from `Authorization: Bearer`."""
    header = request.headers.get("x-api-key")
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Security(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> ApiKey:
    """The caller's key; 401 when missing, wrong, or when two different keys are sent."""
    bearer_key = bearer.credentials if bearer else None
    if header_key and bearer_key and not hmac.compare_digest(header_key, bearer_key):
        raise Unauthorized("X-API-Key and Authorization carry different keys; send one.")
    keyring: KeyRing = request.app.state.keyring
    key = keyring.identify(header_key or bearer_key)
    if key is None:
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
    request.state.api_key_name = key.name
    return key


def load_or_create_key_file(home: Path) -> tuple[str, bool]:
    """The server's own key in `home/api_key` (mode 0600), made on first start.

    Returns the key and whether it was just created. Several workers may race here:
    O_EXCL lets exactly one create it, and the others read what it wrote."""
    path = home / KEY_FILE_NAME
    home.mkdir(parents=True, exist_ok=True)
    key = "ak-" + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            existing = path.read_text().strip()
            if existing:
                return existing, False
            time.sleep(0.02)
        raise RuntimeError(f"{path} exists but is empty; delete it to make a new key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True
