"""Whether the server is shutting down, for responses that would otherwise stream on.

uvicorn waits for every open response before it exits; a stream that lasts as long as a
job (or a client) must end on its own. sse-starlette, once imported, records uvicorn's exit
signal in `AppStatus`; uvicorn's own flag is read through its signal handler as well.
"""

from __future__ import annotations

import signal

from sse_starlette.sse import AppStatus


def server_stopping() -> bool:
    if AppStatus.should_exit:
        return True
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))
