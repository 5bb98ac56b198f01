"""Refuse request bodies over `AINFINITY_MAX_BODY_BYTES` with 413, before they are read whole.

A declared `Content-Length` over the limit is refused before any byte is read; a chunked body
is counted as it arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ainfinity.exceptions import BodyTooLarge, error_response

_FORM_ROOM = 64 * 1024


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Pure ASGI: only the size is looked at, the body passes through untouched."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, uploads: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Upload routes (POST) with a limit of their own, which they enforce on the file as it
        # streams in; here they get room for the form around it.
        self.uploads = {path: limit + _FORM_ROOM for path, limit in (uploads or {}).items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        if scope.get("method") == "POST" and scope.get("path") in self.uploads:
            limit = self.uploads[scope["path"]]
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0
        too_large = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if not too_large:
                await send(message)
            elif not refused:
                # The app turned the aborted read into an answer of its own (FastAPI: 400);
                # the client gets the 413 instead.
                refused = True
                await self._refuse(scope, receive, send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not refused:
                await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        if limit != self.max_bytes:  # an upload route
            message = (
                f"The file is over the {limit - _FORM_ROOM}-byte upload limit "
                "(AINFINITY_MAX_UPLOAD_BYTES)."
            )
        else:
            message = f"The request body is over the {limit}-byte limit."
        error = BodyTooLarge(message)
        await error_response(error, scope.get("path", ""))(scope, receive, send)
