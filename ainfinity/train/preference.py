"""Preference rows for DPO, in OpenAI's fine-tuning format, checked and read.

    {"input": {"messages": [...]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

The older names `preferred_completion` / `non_preferred_completion` are read too. Standard
library only: the API validates a file with it when a job or an upload arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PREFERENCE_FORMAT = "preference"
PREFERENCE_FIELDS = (
    "input",
    "preferred_output",
    "non_preferred_output",
    "preferred_completion",
    "non_preferred_completion",
)
_PROMPT_ROLES = ("system", "developer", "user", "assistant")


def preference_error(row: dict[str, Any]) -> str | None:
    """Why a preference row cannot be trained on (None: it can)."""
    prompt = row.get("input")
    if not isinstance(prompt, dict) or "messages" not in prompt:
        return "field 'input' must be an object with 'messages'"
    messages = prompt["messages"]
    if not isinstance(messages, list) or not messages:
        return "input.messages must be a non-empty array of messages"
    for index, message in enumerate(messages):
        reason = _message_error(message, _PROMPT_ROLES)
        if reason is not None:
            return f"input.messages[{index}]: {reason}"
    for side in ("preferred", "non_preferred"):
        name = _side_name(row, side)
        if name is None:
            return f"missing field '{side}_output'"
        answer = row[name]
        if not isinstance(answer, list) or len(answer) != 1:
            return f"field {name!r} must be an array of one assistant message"
        reason = _message_error(answer[0], ("assistant",))
        if reason is not None:
            return f"{name}[0]: {reason}"
    return None


def _side_name(row: dict[str, Any], side: str) -> str | None:
    for name in (f"{side}_output", f"{side}_completion"):
        if name in row:
            return name
    return None


def _message_error(message: Any, roles: tuple[str, ...]) -> str | None:
    if not isinstance(message, dict):
        return "expected a message object"
    role, content = message.get("role"), message.get("content")
    if role not in roles:
        return f"role must be {' or '.join(roles)}, got {role!r}"
    if not isinstance(content, str) or not content.strip():
        return "content must be a non-empty string"
    return None


def read_preferences(path: str | Path) -> Iterator[dict[str, Any]]:
    """Validated rows as TRL's conversational preference rows: `prompt` (messages),
    `chosen` and `rejected` (one assistant message each). `developer` reads as `system`."""
    with open(path, encoding="utf-8") as lines:
        for raw in lines:
            if not raw.strip():
                continue
            row = json.loads(raw)
            yield {
                "prompt": [_plain(message) for message in row["input"]["messages"]],
                "chosen": [_plain(row[_side_name(row, "preferred") or ""][0])],
                "rejected": [_plain(row[_side_name(row, "non_preferred") or ""][0])],
            }


def _plain(message: dict[str, Any]) -> dict[str, str]:
    role = "system" if message["role"] == "developer" else message["role"]
    return {"role": role, "content": message["content"]}
