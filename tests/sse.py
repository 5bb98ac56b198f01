"""A small Server-Sent Events reader for tests, over any iterator of lines (httpx's
`iter_lines()` of a TestClient or a real server's streamed response)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    id: str | None
    event: str | None
    data: str | None

    @property
    def json(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)


# Yielded for a comment line (a keep-alive ping), so readers can look at the clock.
PING = Message(id=None, event=None, data=None)


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """Messages as the SSE spec frames them; comments come out as `PING`."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if fields or data:
                yield Message(fields.get("id"), fields.get("event"), "\n".join(data) or None)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            yield PING
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            fields[name] = value


def read_until(
    lines: Iterable[str],
    done: Callable[[list[Message]], bool],
    *,
    timeout: float = 60.0,
) -> list[Message]:
    """Messages (pings left out) until `done(messages)` or the stream's end; fails after
    `timeout` seconds (checked at every line, pings included)."""
    deadline = time.monotonic() + timeout
    messages: list[Message] = []
    for message in parse(lines):
        if message != PING:
            messages.append(message)
            if done(messages):
                return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"stream did not deliver in {timeout} s; got {messages}")
    return messages


def read_all(lines: Iterable[str]) -> list[Message]:
    """Every message until the server ends the stream."""
    return read_until(lines, lambda _: False, timeout=120.0)
