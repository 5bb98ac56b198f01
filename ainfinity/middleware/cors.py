"""CORS from `AINFINITY_CORS_ORIGINS`; off when none are configured."""

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ainfinity.core.config import Settings


def install_cors(app: FastAPI, settings: Settings) -> None:
    origins = settings.cors_origins
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        # A wildcard origin with credentials would let any site act as the user.
        allow_credentials="*" not in origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "X-API-Key",
            "Content-Type",
            "X-Request-ID",
            "Idempotency-Key",
        ],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
