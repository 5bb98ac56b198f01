"""The worker's models: loaded on first use, at most `max_models` at once, least recently
used evicted. LoRA models are their base with the adapter applied (peft); full fine-tunes
and checkpoints load as they are. Each model's tokenizer carries the chat template training
saved (or the default one training would have used), so prompts render as training did."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio

from ainfinity.serving.model_source import ModelSource

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("ainfinity.worker")


class ModelLoadFailed(RuntimeError):
    """The model's files could not be loaded; the message says why."""


class PromptError(ValueError):
    """The messages cannot be rendered with the model's chat template."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class LoadedModel:
    """A model in memory, with what the status route shows about it."""

    source: ModelSource
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context_length: int | None
    parameter_bytes: int
    loaded_at: datetime = field(default_factory=_now)
    last_used_at: datetime = field(default_factory=_now)
    requests: int = 0
    # A fast tokenizer changes its settings per call: one thread at a time.
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation rendered with the generation prompt, tokenized as training did
        (the template places bos itself; no special tokens are added)."""
        import jinja2

        with self.tokenizer_lock:
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            except (jinja2.TemplateError, TypeError, KeyError, IndexError, ValueError) as exc:
                raise PromptError(
                    f"the model's chat template cannot render these messages: {exc}"
                ) from exc
            return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def text_prompt_ids(self, prompt: str) -> list[int]:
        """`[bos] + prompt`, as training encodes a prompt/completion row's prompt."""
        with self.tokenizer_lock:
            ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + ids


class ModelManager:
    """The loaded models of this worker, by public id."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        # A deployment's worker: the one model it serves, never evicted nor unloaded.
        self.pinned: LoadedModel | None = None

    def pin(self, loaded: LoadedModel) -> None:
        self.pinned = loaded
        self._models[loaded.source.id] = loaded

    def use_pinned(self, model_id: str) -> LoadedModel | None:
        """The pinned model when `model_id` names it (marked used), else None."""
        loaded = self.pinned
        if loaded is None or model_id != loaded.source.id:
            return None
        loaded.last_used_at = _now()
        loaded.requests += 1
        return loaded

    async def acquire(self, source: ModelSource) -> LoadedModel:
        """The model, loaded now if needed (one load per id at a time); marks it used."""
        lock = self._loading.setdefault(source.id, asyncio.Lock())
        async with lock:
            loaded = self._models.get(source.id)
            if loaded is None or loaded.source != source:
                # A new id, or the same id over other files (a job deleted and made again).
                self._models.pop(source.id, None)
                loaded = await anyio.to_thread.run_sync(load_model, source)
                self._models[source.id] = loaded
                self._evict()
            self._models.move_to_end(source.id)
            loaded.last_used_at = _now()
            loaded.requests += 1
            return loaded

    def _evict(self) -> None:
        while len(self._models) > self.max_models:
            model_id, _ = self._models.popitem(last=False)
            logger.info("evicted %s (least recently used)", model_id)
        # Requests still generating keep their model alive until they finish.
        gc.collect()

    def unload(self, model_id: str) -> list[str]:
        """Unload the model and its checkpoints; returns the ids unloaded."""
        gone = [
            key
            for key in self._models
            if (key == model_id or key.startswith(model_id + ":"))
            and (self.pinned is None or key != self.pinned.source.id)
        ]
        for key in gone:
            del self._models[key]
        if gone:
            gc.collect()
        return gone

    def loaded(self) -> list[LoadedModel]:
        """Least recently used first."""
        return list(self._models.values())


# transformers' lazy imports are not thread-safe: two models loading at once in two threads
# could fail with an ImportError. Loads take turns (the worker also imports it at start).
_LOADING = threading.Lock()


def load_model(source: ModelSource) -> LoadedModel:
    """Load the weights and tokenizer a source names (blocking: seconds for a real model)."""
    with _LOADING:
        return _load(source)


def _load(source: ModelSource) -> LoadedModel:
    import torch
    from transformers import AutoTokenizer

    from ainfinity.train.chat import ensure_chat_template
    from ainfinity.train.failures import ModelLoadError
    from ainfinity.train.model_loading import load_model_and_tokenizer

    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    try:
        model: Any
        model, tokenizer = load_model_and_tokenizer(
            source.load, seed=source.seed or 0, attn_implementation="sdpa", dtype=dtype
        )
        if source.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter)
        if source.tokenizer is not None and source.tokenizer != source.load:
            tokenizer = AutoTokenizer.from_pretrained(source.tokenizer, trust_remote_code=False)
    except ModelLoadError as exc:
        raise ModelLoadFailed(f"cannot load {source.id!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - files on disk fail in library-specific ways
        raise ModelLoadFailed(f"cannot load {source.id!r}: {type(exc).__name__}: {exc}") from exc
    if tokenizer.chat_template is None:
        try:
            ensure_chat_template(tokenizer)
        except ValueError:
            pass  # no eos to end turns with: chat requests will say the template fails
    model.eval()
    if on_gpu:
        model.to("cuda")
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    logger.info("loaded %s (%d parameter bytes)", source.id, parameter_bytes)
    return LoadedModel(
        source=source,
        model=model,
        tokenizer=tokenizer,
        context_length=int(context) if isinstance(context, int) else None,
        parameter_bytes=parameter_bytes,
    )
