"""The one error shape every failed request gets."""

from typing import Any

from ainfinity.schema.base import PublicModel


class ErrorDetail(PublicModel):
    """What went wrong: a stable snake_case `code` and a human `msg`."""

    code: str
    msg: str
    errors: list[dict[str, Any]] | None = None


class ErrorResponse(PublicModel):
    """`{"detail": {"code": ..., "msg": ...}}`."""

    detail: ErrorDetail
