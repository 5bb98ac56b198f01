"""How the inference worker loads one model: what the gateway sends it with each request."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

HEADER = "x-ainfinity-model-source"


@dataclass(frozen=True)
class ModelSource:
    """`load` is a built-in name (its weights drawn from `seed`) or a model directory;
    `adapter` a LoRA adapter directory applied over it; `tokenizer` where the tokenizer and
    its chat template are (None: with `load`). `id` is the model's public id."""

    id: str
    load: str
    seed: int | None = None
    adapter: str | None = None
    tokenizer: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelSource:
        data: Any = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ValueError("a model source is a JSON object with an id")
        return cls(
            id=data["id"],
            load=str(data["load"]),
            seed=int(data["seed"]) if data.get("seed") is not None else None,
            adapter=str(data["adapter"]) if data.get("adapter") else None,
            tokenizer=str(data["tokenizer"]) if data.get("tokenizer") else None,
        )
