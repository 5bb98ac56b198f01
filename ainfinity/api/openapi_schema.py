"""The OpenAPI document, made to say what the app really answers with errors.

FastAPI documents a route's error responses in the route's own media type (so a
`text/plain` route claims `text/plain` 404s) and gives 422 its `HTTPValidationError`
shape, while every error this app sends is `application/json` `ErrorResponse`
(`ainfinity.exceptions`). Errors that middleware raises (401 from the auth dependency,
413 from the body limit, 429 from the rate limiter) apply to whole groups of routes, so
they are declared here, once, from the same rules the middleware follows, instead of on
every route by copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ainfinity.exceptions import OPENAI_PREFIX
from ainfinity.middleware.auth import document_bearer
from ainfinity.middleware.rate_limit import LIMITED_PREFIXES
from ainfinity.schema.error import ErrorResponse
from ainfinity.schema.openai import OpenAIError

_REF_TEMPLATE = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _REF_TEMPLATE.format(model=ErrorResponse.__name__)}
_OPENAI_ERROR_REF = {"$ref": _REF_TEMPLATE.format(model=OpenAIError.__name__)}
# FastAPI's own validation error shapes: never sent by this app (see exceptions.py).
_UNUSED_COMPONENTS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Why each app-wide status can happen, as the OpenAPI description of that response.
_DESCRIPTIONS = {
    "400": "Body that cannot be decoded (not UTF-8); on /v1, any invalid parameter",
    "401": "Missing or wrong API key",
    "413": "Request body over AINFINITY_MAX_BODY_BYTES",
    "422": "Invalid request",
    "429": "Rate limited",
}


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with one that post-processes FastAPI's document (once, cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_bearer(with_error_responses(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare every error response as the JSON the app really sends: `ErrorResponse`, or
    `OpenAIError` on the OpenAI-compatible `/v1/` routes."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, OpenAIError):
        error_schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
        schemas.update(error_schema.pop("$defs", {}))
        schemas.setdefault(model.__name__, error_schema)
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                _declare_errors(path, operation)
    for name in _UNUSED_COMPONENTS:
        schemas.pop(name, None)
    return document


def _declare_errors(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    openai = path.startswith(OPENAI_PREFIX)
    if operation.get("security"):
        _add(responses, "401")
    if operation.get("requestBody"):
        _add(responses, "400")
        _add(responses, "413")
    if operation.get("requestBody") or operation.get("parameters"):
        # The OpenAI-compatible routes answer a bad parameter with 400, as OpenAI does.
        _add(responses, "400" if openai else "422")
    if openai:
        responses.pop("422", None)
    if path.startswith(LIMITED_PREFIXES):
        _add(responses, "429")
    ref = _OPENAI_ERROR_REF if openai else _ERROR_REF
    for status, response in responses.items():
        if status[:1] in ("4", "5"):
            response["content"] = {"application/json": {"schema": dict(ref)}}


def _add(responses: dict[str, Any], status: str) -> None:
    responses.setdefault(status, {"description": _DESCRIPTIONS[status]})
