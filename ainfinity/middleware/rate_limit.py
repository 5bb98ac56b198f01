"""Rate limiting: one budget per API key across all `/api/` routes (per client address
for requests without a valid key), counted by slowapi's limiter.

slowapi's own middleware finds the route handler to decide whether a request is limited;
FastAPI >= 0.16x nests included routers, so it finds none and lets everything through.
We keep slowapi's `Limiter` (storage URI, strategy) and apply its budget here instead.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from slowapi import Limiter
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ainfinity.core.config import Settings
from ainfinity.exceptions import RateLimited, error_body
from ainfinity.middleware.auth import KeyRing, presented_key

LIMITED_PREFIX = "/api/"
_NAMESPACE = "ainfinity"


def build_limiter(settings: Settings) -> Limiter:
    return Limiter(
        key_func=lambda: "",  # unused: the middleware computes the key itself
        storage_uri=settings.rate_limit_storage,
        strategy="fixed-window",
    )


class RateLimitMiddleware:
    """Pure ASGI: counts each `/api/` request against its key's budget, answers 429 past it."""

    def __init__(self, app: ASGIApp, *, limiter: Limiter, rate: str) -> None:
        self.app = app
        self.limiter = limiter
        self.item: RateLimitItem = parse(rate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIX):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = _limit_key(request)
        strategy = self.limiter.limiter
        allowed = strategy.hit(self.item, _NAMESPACE, key)
        reset_at, remaining = strategy.get_window_stats(self.item, _NAMESPACE, key)
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time())))
            response = JSONResponse(
                error_body(RateLimited.code, f"{RateLimited.msg} Limit: {self.item}."),
                status_code=429,
                headers=headers,
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _limit_key(request: Request) -> str:
    # Storage keys may be logged by backends: a key's name, never the key itself.
    keyring: KeyRing = request.app.state.keyring
    key = keyring.identify(presented_key(request))
    if key is not None:
        return f"key:{key.name}"
    client = request.client.host if request.client else "unknown"
    return f"addr:{client}"
