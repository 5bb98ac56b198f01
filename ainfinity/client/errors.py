"""Typed errors of the client: every API error answer becomes an `ApiError` subclass.

The server answers errors in two shapes: `{"detail": {"code", "msg"}}` under `/api/v1`
(422 adds `errors`, the failing fields), and OpenAI's `{"error": {"message", "type",
"param", "code"}}` under `/v1`. Both map to the same classes; anything else (a proxy's HTML
page) still becomes an `ApiError`, with a code made from the status. A stream that fails
after its answer began raises `StreamFailed`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx


class AinfinityClientError(Exception):
    """Base of everything the client raises: a stable `code` and a human `msg`."""

    code: str
    msg: str

    def __init__(self, code: str, msg: str) -> None:
        self.code = code
        self.msg = msg
        super().__init__(f"{code}: {msg}")


class ConnectionFailed(AinfinityClientError):
    """The server could not be reached, or the connection broke or timed out."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__("connection_failed", f"cannot reach {url}: {reason}")


class ApiError(AinfinityClientError):
    """The server answered with an error status."""

    status: ClassVar[int | None] = None

    def __init__(
        self,
        status_code: int,
        code: str,
        msg: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: httpx.Headers | None = None,
        param: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.errors = errors
        self.headers = headers or httpx.Headers()
        # The request field at fault, when an OpenAI-shaped (`/v1`) answer names it.
        self.param = param
        super().__init__(code, msg)


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class ValidationFailed(ApiError):
    """422: `errors` holds the failing fields (`loc`, `msg`, `type`) when the body was at fault."""

    status = 422


class RateLimited(ApiError):
    """429: `retry_after` is the seconds the server asks to wait, when it says."""

    status = 429

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ServerError(ApiError):
    """Any 5xx answer."""


class StreamFailed(AinfinityClientError):
    """A streamed answer ended with an error chunk (`data: {"error": ...}`) instead of
    `data: [DONE]`: the status was 200 already, so the error arrives inside the stream.
    The text received before it stays with the caller."""

    def __init__(self, code: str, msg: str, *, kind: str | None = None) -> None:
        self.kind = kind
        super().__init__(code, msg)


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ValidationFailed,
        RateLimited,
    )
    if cls.status is not None
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for an error answer; the body must have been read."""
    code, msg = f"http_{response.status_code}", response.reason_phrase
    errors: list[dict[str, Any]] | None = None
    param: str | None = None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
        text = response.text.strip()
        if text:
            msg = text[:500]
    detail = body.get("detail") if isinstance(body, dict) else None
    openai_error = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code = str(detail.get("code", code))
        msg = str(detail.get("msg", msg))
        raw_errors = detail.get("errors")
        errors = raw_errors if isinstance(raw_errors, list) else None
    elif isinstance(detail, str):
        msg = detail
    elif isinstance(openai_error, dict):
        code, msg, param = _openai_fields(openai_error, code, msg)
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, msg, errors=errors, headers=response.headers, param=param)


def _openai_fields(error: dict[str, Any], code: str, msg: str) -> tuple[str, str, str | None]:
    """`code`, `msg` and `param` of OpenAI's error object; OpenAI leaves `code` null at
    times, and its `type` (`invalid_request_error`, ...) is the next best code."""
    found = error.get("code") or error.get("type")
    param = error.get("param")
    return (
        str(found) if found else code,
        str(error.get("message") or msg),
        str(param) if param is not None else None,
    )


def stream_error(payload: dict[str, Any]) -> StreamFailed:
    """The error an in-stream `{"error": {...}}` chunk carries."""
    error = payload.get("error")
    fields = error if isinstance(error, dict) else {}
    code, msg, _ = _openai_fields(fields, "stream_failed", "The answer stopped with an error.")
    kind = fields.get("type")
    return StreamFailed(code, msg, kind=str(kind) if kind else None)


def raise_for_response(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_response(response)


def connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(url, reason)
