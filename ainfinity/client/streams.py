"""Reading a streamed chat answer: `data: {chunk}` lines, then `data: [DONE]`.

Both clients feed the lines they receive to one `ChatStream`, which hands back the text
each chunk adds. A `data: {"error": ...}` chunk (the worker failed after the answer began)
raises `StreamFailed`, and so does a stream that ends without `[DONE]`: a cut answer must
not pass for a whole one.
"""

from __future__ import annotations

import json
from typing import Any

from ainfinity.client.errors import StreamFailed, stream_error

_DONE = "[DONE]"


class ChatStream:
    """The state of one streamed answer, fed a line at a time."""

    def __init__(self) -> None:
        self.done = False
        self.finish_reason: str | None = None
        # Sent as the last chunk when the request asked for `stream_options.include_usage`.
        self.usage: dict[str, Any] | None = None

    def feed(self, line: str) -> str:
        """The text this line adds to the answer ("" for all other lines)."""
        # Blank lines end an event; lines starting with ':' are keep-alive comments.
        if not line.startswith("data:"):
            return ""
        data = line[5:].removeprefix(" ")
        if data == _DONE:
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as exc:
            raise StreamFailed("invalid_chunk", f"not a JSON chunk: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise StreamFailed("invalid_chunk", f"not a JSON object: {data[:200]!r}")
        if "error" in chunk:
            raise stream_error(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return text

    def end(self) -> None:
        """The response is over: raise unless the server said `[DONE]`."""
        if not self.done:
            raise StreamFailed(
                "incomplete_stream", "The answer stream ended before the server finished it."
            )
