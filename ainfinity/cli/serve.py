"""`ainfinity serve`: the API server, with the settings from `AINFINITY_*` and `.env`."""

from __future__ import annotations


def serve() -> None:
    """Serve the API (AINFINITY_HOST, AINFINITY_PORT, AINFINITY_WORKERS, ...; see .env.example)."""
    # Imported here: the job commands should not pay for the server's imports.
    import uvicorn

    from ainfinity.core.config import get_settings
    from ainfinity.observability import multiprocess

    settings = get_settings()
    if settings.workers > 1:
        # Before any worker starts: they inherit the variable and sum their metrics.
        multiprocess.enable(settings.home)
    uvicorn.run(
        "ainfinity.api.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        # RequestLoggingMiddleware already writes one line per request, with its id.
        access_log=False,
    )
