"""Rate limiting: one budget per API key across all `/api/` and `/v1/` routes (per client
address for requests without a valid key), counted by slowapi's limiter.

slowapi's own middleware finds the route handler to decide whether a request is limited;
FastAPI >= 0.16x nests included routers, so it finds none and lets everything through.
We keep slowapi's `Limiter` (storage URI, strategy) and apply its budget here instead.

With `memory://` each worker process counts on its own (a key gets up to N x the limit from
N workers); with `redis://` all workers share one counter per key, so the limit is exact.
A redis that cannot be reached answers 503 `rate_limit_unavailable` within seconds; its
round trips run off the event loop, so it never stalls a worker (or `/health`).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any

import anyio
from limits import RateLimitItem, WindowStats, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage
from slowapi import Limiter
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ainfinity.core.config import Settings
from ainfinity.exceptions import RateLimited, RateLimitUnavailable, render_error
from ainfinity.middleware.auth import KeyRing, identify, presented_key

LIMITED_PREFIXES = ("/api/", "/v1/")
_NAMESPACE = "ainfinity"
# redis-py waits forever by default; options in the storage URI (`?socket_timeout=5`) win.
_REDIS_TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
_UNAVAILABLE_RETRY_AFTER = "5"

logger = logging.getLogger("ainfinity.rate_limit")


def build_limiter(settings: Settings) -> Limiter:
    uri = settings.rate_limit_storage
    # Every storage error becomes a `StorageError`, whatever the backend.
    options: dict[str, Any] = {"wrap_exceptions": True}
    if uri.partition(":")[0] in ("redis", "rediss", "redis+unix"):
        options.update(_REDIS_TIMEOUTS)
    return Limiter(
        key_func=lambda: "",  # unused: the middleware computes the key itself
        storage_uri=uri,
        storage_options=options,
        strategy="fixed-window",
    )


class RateLimitMiddleware:
    """Pure ASGI: counts each `/api/` request against its key's budget, answers 429 past it."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, rate: str) -> None:
        self.app = app
        self.limiter = limiter
        self.item: RateLimitItem = parse(rate)
        self.in_process = isinstance(limiter.limiter.storage, MemoryStorage)
        # The storage key of each budget, built once: the fixed-window strategy's own key.
        self._storage_key = functools.lru_cache(maxsize=4096)(
            lambda budget: self.item.key_for(_NAMESPACE, budget)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        key = _limit_key(scope)
        try:
            if self.in_process:
                allowed, (reset_at, remaining) = self._count(key)
            else:
                allowed, (reset_at, remaining) = await anyio.to_thread.run_sync(self._count, key)
        except StorageError as exc:
            logger.warning("rate-limit storage unavailable: %s", exc.storage_error)
            response = render_error(
                scope["path"],
                RateLimitUnavailable.status_code,
                RateLimitUnavailable.code,
                RateLimitUnavailable.msg,
                headers={"Retry-After": _UNAVAILABLE_RETRY_AFTER},
                retry=True,
            )
            await response(scope, receive, send)
            return
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
            response = render_error(
                scope["path"],
                429,
                RateLimited.code,
                f"{RateLimited.msg} Limit: {self.item}.",
                headers=headers,
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _count(self, budget: str) -> tuple[bool, WindowStats]:
        # What slowapi's fixed-window strategy does in `hit` and `get_window_stats`, in two
        # storage calls instead of four (each one a round trip with redis); the remaining
        # budget is the one this very hit left.
        storage = self.limiter.limiter.storage
        key = self._storage_key(budget)
        count = storage.incr(key, self.item.get_expiry())
        reset_at = storage.get_expiry(key)
        return count <= self.item.amount, WindowStats(reset_at, max(0, self.item.amount - count))


def _limit_key(scope: Scope) -> str:
    # Storage keys may be logged by backends: a key's name, never the key itself.
    keyring: KeyRing = scope["app"].state.keyring
    key = identify(scope, keyring, presented_key(Headers(scope=scope)))
    if key is not None:
        return f"key:{key.name}"
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"
