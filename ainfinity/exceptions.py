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
    """Base of every error the API reports with a code.

    `param` names the request field at fault (the OpenAI-compatible routes report it)."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    msg: ClassVar[str] = "Internal error"

    def __init__(
        self,
        msg: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        self.detail_msg = msg or self.msg
        self.headers = headers
        self.param = param
        super().__init__(self.detail_msg)


class InvalidRequest(AinfinityError):
    status_code = 400
    code = "invalid_request"
    msg = "The request is not valid."


class Unauthorized(AinfinityError):
    status_code = 401
    code = "unauthorized"
    msg = "A valid API key is required (X-API-Key or Authorization: Bearer)."


class PathNotAllowed(AinfinityError):
    status_code = 403
    code = "path_not_allowed"
    msg = "That path is outside the directories this server reads from."


class AdminOnly(AinfinityError):
    status_code = 403
    code = "admin_only"
    msg = "Only an admin key may do this."


class WebhookNotAllowed(AinfinityError):
    status_code = 403
    code = "webhook_not_allowed"
    msg = "That webhook host is not one this server posts to (AINFINITY_WEBHOOK_HOSTS)."


class JobNotFound(AinfinityError):
    status_code = 404
    code = "job_not_found"
    msg = "No job with that name."


class ModelNotFound(AinfinityError):
    status_code = 404
    code = "model_not_found"
    msg = "No model with that id."


class DeploymentNotFound(AinfinityError):
    status_code = 404
    code = "deployment_not_found"
    msg = "No deployment with that name."


class DeploymentExists(AinfinityError):
    status_code = 409
    code = "deployment_exists"
    msg = "A deployment with that name already exists."


class DeploymentStopped(AinfinityError):
    status_code = 409
    code = "deployment_stopped"
    msg = "The deployment is stopped (or stopping, or failed)."


class DeploymentUpdating(AinfinityError):
    status_code = 409
    code = "deployment_updating"
    msg = "A rolling update of this deployment is under way; wait for it to end."


class DeploymentNotReady(AinfinityError):
    status_code = 409
    code = "deployment_not_ready"
    msg = "The deployment is still starting; update it once it is READY."


class DeploymentLimit(AinfinityError):
    status_code = 409
    code = "deployment_limit"
    msg = "This server runs no more local deployments (AINFINITY_LOCAL_MAX_DEPLOYMENTS)."


class NoServiceTask(AinfinityError):
    status_code = 409
    code = "no_service_task"
    msg = "A local deployment runs on this server; it has no SkyServe task."


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


class JobNotRunning(AinfinityError):
    status_code = 409
    code = "job_not_running"
    msg = "Only a running job can be paused."


class JobNotPaused(AinfinityError):
    status_code = 409
    code = "job_not_paused"
    msg = "Only a paused job can be resumed."


class PauseNeedsOutputUri(AinfinityError):
    status_code = 409
    code = "pause_needs_output_uri"
    msg = "A SkyPilot job can only pause with an output_uri bucket for its checkpoint."


class JobActive(AinfinityError):
    status_code = 409
    code = "job_active"
    msg = "The job is still active; cancel it first."


class ModelNotDeletable(AinfinityError):
    status_code = 409
    code = "model_not_deletable"
    msg = "Base models are not deleted through the API."


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


class ModelNotServable(AinfinityError):
    status_code = 422
    code = "model_not_servable"
    msg = "That model's files are not on this server."


class ContextLengthExceeded(AinfinityError):
    status_code = 400
    code = "context_length_exceeded"
    msg = "The prompt and max_tokens do not fit in the model's context."


class RateLimited(AinfinityError):
    status_code = 429
    code = "rate_limited"
    msg = "Too many requests; retry later."


class RateLimitUnavailable(AinfinityError):
    status_code = 503
    code = "rate_limit_unavailable"
    msg = "The rate-limit counters cannot be reached right now; retry later."


class FileNotFound(AinfinityError):
    status_code = 404
    code = "file_not_found"
    msg = "No file with that id."


class FileInUse(AinfinityError):
    status_code = 409
    code = "file_in_use"
    msg = "A job that has not ended trains on this file."


class StorageFull(AinfinityError):
    status_code = 507
    code = "storage_full"
    msg = "The server's disk is full; nothing was kept."


class ServerBusy(AinfinityError):
    status_code = 429
    code = "server_busy"
    msg = "Every generation slot is taken and the queue is full; retry shortly."


class WorkerUnavailable(AinfinityError):
    status_code = 503
    code = "worker_unavailable"
    msg = "The inference worker is not available right now; retry shortly."


class DeploymentUnavailable(AinfinityError):
    status_code = 503
    code = "deployment_unavailable"
    msg = "The deployment's endpoint cannot be reached right now; retry shortly."


class CatalogUnavailable(AinfinityError):
    status_code = 503
    code = "catalog_unavailable"
    msg = "SkyPilot's catalog cannot be read right now."


class NotImplementedYet(AinfinityError):
    status_code = 501
    code = "not_implemented"
    msg = "Not implemented yet."


OPENAI_PREFIX = "/v1/"
# OpenAI's error `type` by status, as its API and SDK use them.
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
# Statuses the `openai` SDK retries by default (408, 409, 429, 5xx): answers where a retry
# cannot help say so with `x-should-retry: false`. Some 5xx are worth a retry (a worker
# restarting), so they pass `retry=True`.
_RETRIED = frozenset({408, 409, 429})


def error_body(code: str, msg: str, errors: list[Any] | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "msg": msg}
    if errors is not None:
        detail["errors"] = errors
    return {"detail": detail}


def openai_error_body(status: int, code: str, msg: str, param: str | None = None) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": msg, "type": kind, "param": param, "code": code}}


def render_error(
    path: str,
    status: int,
    code: str,
    msg: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[Any] | None = None,
    retry: bool | None = None,
) -> JSONResponse:
    """The one error response: `{"detail": {"code", "msg"}}`, or OpenAI's shape on `/v1/`."""
    if not path.startswith(OPENAI_PREFIX):
        return JSONResponse(error_body(code, msg, errors), status_code=status, headers=headers)
    headers = dict(headers or {})
    if retry is None:
        retry = status in _RETRIED
    if not retry:
        headers["x-should-retry"] = "false"
    return JSONResponse(
        openai_error_body(status, code, msg, param), status_code=status, headers=headers
    )


def error_response(exc: AinfinityError, path: str = "") -> JSONResponse:
    return render_error(
        path,
        exc.status_code,
        exc.code,
        exc.detail_msg,
        param=exc.param,
        headers=exc.headers,
        retry=exc.status_code in _RETRIED or exc.status_code == 503,
    )


async def _handle_ainfinity_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AinfinityError)
    return error_response(exc, request.url.path)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Echoing `input` back could return megabytes (or secrets) to the sender: drop it.
    raw = exc.errors()
    errors = [{k: v for k, v in err.items() if k not in ("input", "url", "ctx")} for err in raw]
    first = raw[0] if raw else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    msg = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    if request.url.path.startswith(OPENAI_PREFIX):
        # OpenAI answers a bad parameter with 400 and names it (without pydantic's names
        # of the union member that failed: `messages.0.content`, not `....content.str`).
        field = _field(first)
        # A union (`"auto"` or a number) fails once per member: the member the value was
        # meant for says what is wrong (`n_epochs: >= 1`), not `Input should be 'auto'`.
        same = [e for e in raw if _field(e) == field]
        if len(same) > 1 and first.get("type") == "literal_error":
            first = next((e for e in same if e.get("type") != "literal_error"), first)
            msg = f"{field}: {first.get('msg', 'invalid')}"
        param = (first.get("ctx") or {}).get("param") or field or None
        if first.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {where}"
        return render_error(request.url.path, 400, "invalid_request", msg, param=param)
    return render_error(
        request.url.path, 422, "validation_error", msg, errors=jsonable_encoder(errors)
    )


def _field(error: Any) -> str:
    """The field an error is about, without `body` or pydantic's union member tags."""
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body" and not _tag(p))


def _tag(part: object) -> bool:
    return isinstance(part, str) and (
        "[" in part or part in _TYPE_TAGS or part.startswith("constrained-")
    )


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


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
    return render_error(
        request.url.path,
        exc.status_code,
        code,
        str(exc.detail),
        headers=getattr(exc, "headers", None),
    )


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return render_error(request.url.path, 500, "internal_error", "Internal error")


def register_exception_handlers(app: FastAPI) -> None:
    """Map every error to the `{"detail": {"code", "msg"}}` shape (OpenAI's on `/v1/`)."""
    app.add_exception_handler(AinfinityError, _handle_ainfinity_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected)
