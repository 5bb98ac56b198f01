"""One coded error hierarchy, and the one place that turns errors into responses.

Services raise these; they know nothing of HTTP beyond the status each one maps to.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ainfinity.errors")


class AinfinityError(Exception):
    """Base of every error the API reports with a code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    msg: ClassVar[str] = "Internal error"

    def __init__(self, msg: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail_msg = msg or self.msg
        self.headers = headers
        super().__init__(self.detail_msg)


class Unauthorized(AinfinityError):
    status_code = 401
    code = "unauthorized"
    msg = "A valid API key is required (X-API-Key or Authorization: Bearer)."


class PathNotAllowed(AinfinityError):
    status_code = 403
    code = "path_not_allowed"
    msg = "That path is outside the directories this server reads from."


class WebhookNotAllowed(AinfinityError):
    status_code = 403
    code = "webhook_not_allowed"
    msg = "That webhook host is not one this server posts to (AINFINITY_WEBHOOK_HOSTS)."


class JobNotFound(AinfinityError):
    status_code = 404
    code = "job_not_found"
    msg = "No job with that name."


class JobExists(AinfinityError):
    status_code = 409
    code = "job_exists"
    msg = "A job with that name already exists."


class IdempotencyConflict(AinfinityError):
    status_code = 409
    code = "idempotency_conflict"
    msg = "This Idempotency-Key was already used with a different request."


class JobFinished(AinfinityError):
    status_code = 409
    code = "job_finished"
    msg = "The job has already finished."


class JobActive(AinfinityError):
    status_code = 409
    code = "job_active"
    msg = "The job is still active; cancel it first."


class BodyTooLarge(AinfinityError):
    status_code = 413
    code = "body_too_large"
    msg = "The request body is too large."


class InvalidSpec(AinfinityError):
    status_code = 422
    code = "invalid_spec"
    msg = "The job specification is not valid."


class InvalidCursor(AinfinityError):
    status_code = 422
    code = "invalid_cursor"
    msg = "The pagination cursor is not one this server issued."


class InvalidDataset(AinfinityError):
    status_code = 422
    code = "invalid_dataset"
    msg = "The dataset is not a valid JSONL training file."


class InvalidModel(AinfinityError):
    status_code = 422
    code = "invalid_model"
    msg = "The model is neither a known built-in, a model directory, nor a hub id."


class RateLimited(AinfinityError):
    status_code = 429
    code = "rate_limited"
    msg = "Too many requests; retry later."


class RateLimitUnavailable(AinfinityError):
    status_code = 503
    code = "rate_limit_unavailable"
    msg = "The rate-limit counters cannot be reached right now; retry later."


class CatalogUnavailable(AinfinityError):
    status_code = 503
    code = "catalog_unavailable"
    msg = "SkyPilot's catalog cannot be read right now."


class NotImplementedYet(AinfinityError):
    status_code = 501
    code = "not_implemented"
    msg = "Not implemented yet."


def error_body(code: str, msg: str, errors: list[Any] | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "msg": msg}
    if errors is not None:
        detail["errors"] = errors
    return {"detail": detail}


def error_response(exc: AinfinityError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.detail_msg), status_code=exc.status_code, headers=exc.headers
    )


async def _handle_ainfinity_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AinfinityError)
    return error_response(exc)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Echoing `input` back could return megabytes (or secrets) to the sender: drop it.
    errors = [
        {k: v for k, v in err.items() if k not in ("input", "url", "ctx")} for err in exc.errors()
    ]
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    msg = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    return JSONResponse(
        error_body("validation_error", msg, jsonable_encoder(errors)), status_code=422
    )


# 400: FastAPI's answer to a body it cannot decode (not UTF-8), before any validation.
_HTTP_CODES = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


async def _handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return JSONResponse(
        error_body(code, str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "Internal error"), status_code=500)


def register_exception_handlers(app: FastAPI) -> None:
    """Map every error to the `{"detail": {"code", "msg"}}` shape."""
    app.add_exception_handler(AinfinityError, _handle_ainfinity_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected)
