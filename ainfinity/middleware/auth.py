"""API-key authentication, declared as security schemes so Swagger's Authorize works.

Keys are compared by SHA-256 digest in constant time, against every configured key
(no early exit), and are never logged.

One security dependency reads both headers: FastAPI's per-request cost grows with each
security dependency (a dependency per scheme cost more than the route's own work), so the
Bearer scheme is added to the OpenAPI document by `document_bearer` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.types import Scope

from ainfinity.core.config import ApiKey
from ainfinity.exceptions import Unauthorized

KEY_FILE_NAME = "api_key"

HEADER_SCHEME = "ApiKeyHeader"
BEARER_SCHEME = "BearerKey"
_BEARER_DOC = {
    "type": "http",
    "scheme": "bearer",
    "description": "The API key, as `Authorization: Bearer <key>`.",
}
# Where the rate limiter leaves the key it identified, so the request hashes it once.
_IDENTIFIED = "ainfinity.identified_key"


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


def presented_key(headers: Headers) -> str | None:
    """The key from `X-API-Key`, or else from `Authorization: Bearer`."""
    return headers.get("x-api-key") or _bearer_token(headers)


def _bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def identify(scope: Scope, keyring: KeyRing, presented: str | None) -> ApiKey | None:
    """`keyring.identify`, remembered for the rest of the request."""
    state = scope.setdefault("state", {})
    known = state.get(_IDENTIFIED)
    if known is not None and known[0] == presented:
        return known[1]
    key = keyring.identify(presented)
    state[_IDENTIFIED] = (presented, key)
    return key


class ApiKeyAuth(APIKeyHeader):
    """The security dependency: the caller's key from `X-API-Key` or `Authorization:
    Bearer`; 401 when missing, wrong, or when two different keys are sent."""

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        header_key = request.headers.get("x-api-key") or None
        bearer_key = _bearer_token(request.headers)
        if header_key and bearer_key and not hmac.compare_digest(header_key, bearer_key):
            raise Unauthorized("X-API-Key and Authorization carry different keys; send one.")
        key = identify(request.scope, request.app.state.keyring, header_key or bearer_key)
        if key is None:
            raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
        request.state.api_key_name = key.name
        return key


require_api_key = ApiKeyAuth(
    name="X-API-Key",
    auto_error=False,
    scheme_name=HEADER_SCHEME,
    description="The API key, as `X-API-Key: <key>`.",
)


def document_bearer(document: dict[str, Any]) -> dict[str, Any]:
    """Offer `Authorization: Bearer` wherever the OpenAPI document asks for the key."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = _BEARER_DOC
    for item in document.get("paths", {}).values():
        for operation in item.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if security and {HEADER_SCHEME: []} in security:
                security.append({BEARER_SCHEME: []})
    return document


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
