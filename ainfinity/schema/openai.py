"""OpenAI's request and response shapes for `/v1`: the contract the `openai` SDK parses.

Requests are strict: a field OpenAI defines but ainfinity does not do is accepted only at its
"off" value (so clients that always send `logprobs: false` or `n: 1` work) and is a 400
naming it otherwise; a field OpenAI does not define is a 400 too.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ainfinity.schema.base import PublicModel

# The most stop sequences OpenAI takes, and a bound on each.
MAX_STOP = 4
_StopText = Annotated[str, Field(min_length=1, max_length=256)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]*$")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: _StopText | list[_StopText] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=512)
    # Defined by OpenAI, not done here: accepted at their "off" value only (`_off_fields`).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None

    OFF_VALUES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "frequency_penalty": (None, 0, 0.0),
        "presence_penalty": (None, 0, 0.0),
        "logit_bias": (None, {}),
        "logprobs": (None, False, 0),
    }

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_STOP:
            raise ValueError(f"give 1 to {MAX_STOP} stop sequences")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported: send one request per choice")
        return value

    @model_validator(mode="after")
    def _off_fields(self) -> _Request:
        for name, allowed in self.OFF_VALUES.items():
            value = getattr(self, name, None)
            if value not in allowed:
                # `param` travels in the error's context to OpenAI's error shape.
                raise PydanticCustomError(
                    "unsupported_parameter",
                    "{param} is not supported by this server; leave it unset",
                    {"param": name},
                )
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(
                "unsupported_parameter",
                "stream_options is only allowed with stream: true",
                {"param": "stream_options"},
            )
        return self

    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A message; `developer` is read as `system`, content parts must all be text."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=256)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Request):
    """Body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    OFF_VALUES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **_Request.OFF_VALUES,
        "top_logprobs": (None, 0),
        "tools": (None, []),
        "tool_choice": (None, "none", "auto"),
        "response_format": (None, {"type": "text"}),
        "store": (None, False),
    }

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]

    def token_limit(self) -> int | None:
        # OpenAI's newer name wins when both are sent.
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    """Body of `POST /v1/completions` (OpenAI's default max_tokens is 16)."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(16, ge=1, le=1_000_000)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    OFF_VALUES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **_Request.OFF_VALUES,
        "echo": (None, False),
        "suffix": (None, ""),
        "best_of": (None, 1),
    }

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_limit(self) -> int | None:
        return self.max_tokens


# -- responses ---------------------------------------------------------------------------------


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now_seconds() -> int:
    return int(time.time())


class Usage(PublicModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(PublicModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(PublicModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(PublicModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(PublicModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(PublicModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class OpenAIModel(PublicModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(PublicModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class DeletedModel(PublicModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


class OpenAIErrorDetail(PublicModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(PublicModel):
    """`{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIErrorDetail


# -- files and fine-tuning jobs ------------------------------------------------------------------


class OpenAIFile(PublicModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune"] = "fine-tune"
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None


class OpenAIFileList(PublicModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class DeletedFile(PublicModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
