"""A chat stream the test holds back: proof that a client shows an answer as it arrives.

A real model streams too fast to tell "printed as it came" from "printed at the end", so
this loopback HTTP server answers `POST /v1/chat/completions` with the chunks before
`release()`, then waits for the test, then sends the rest. A client that buffered the
answer would show nothing while the server waits; if the test never releases it (it waits
for the first pieces that never show), the server cuts the stream after `HOLD_SECONDS`, so
such a client fails rather than hangs. The same server can end a stream with an error
chunk, or cut it, as the real one does when its worker dies.

    with HeldStream(["Hel"], ["lo"]) as held:
        ... start a client against held.url, see "Hel" arrive ...
        held.release()  # now "lo", the finish chunk and [DONE]
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MODEL = "ft:tiny-random-llama:held"
HOLD_SECONDS = 10.0


def chunk(content: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    """A chunk as the server sends it: None is the first (the role), "" with a reason the last."""
    delta: dict[str, str] = {"content": content} if content else {}
    if content is None:
        delta = {"role": "assistant", "content": ""}
    return {
        "id": "chatcmpl-held",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def error_chunk(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


class HeldStream:
    """`before` pieces, a wait for `release()`, then `after` pieces and the end: `[DONE]`
    (the default), an error chunk (`ending=error_chunk(...)`), or nothing (`ending="cut"`)."""

    def __init__(
        self,
        before: list[str],
        after: list[str],
        *,
        ending: dict[str, Any] | str = "[DONE]",
    ) -> None:
        self.before = before
        self.after = after
        self.ending = ending
        self.bodies: list[dict[str, Any]] = []  # every request body, parsed
        self.headers: list[dict[str, str]] = []
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> HeldStream:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                held.bodies.append(json.loads(body))
                held.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                # No length: the answer ends when the connection closes (HTTP/1.0 style).
                self.send_header("connection", "close")
                self.end_headers()
                self.send(chunk(None))
                for piece in held.before:
                    self.send(chunk(piece))
                if not held._released.wait(timeout=HOLD_SECONDS):
                    return  # cut: no [DONE]
                for piece in held.after:
                    self.send(chunk(piece))
                if held.ending == "[DONE]":
                    self.send(chunk("", "stop"))
                    self.wfile.write(b"data: [DONE]\n\n")
                elif isinstance(held.ending, dict):
                    self.send(held.ending)
                self.wfile.flush()

            def send(self, payload: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

        return Handler
