"""Text generation with transformers, streamed token by token, stoppable and bounded in time.

`generate()` runs in a thread of its own; a streamer hands each new token to the event loop
(no thread hop per token), where it is decoded incrementally and checked for stop sequences.
A stopping criterion reads a flag, so a client that goes away, a stop sequence or a timeout
ends generation within one token. A `generate()` that raises ends the stream with its error,
and one that stalls is given up after `token_timeout` seconds: a stream can never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_END = object()


class GenerationFailed(RuntimeError):
    """`generate()` raised, or produced nothing for too long."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks for; temperature 0 is greedy decoding."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


class StopMatcher:
    """Cuts generated text at the first stop sequence, holding back what may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(stop) for stop in stops), default=1) - 1
        self.text = ""
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add generated text; return what may be sent now, and whether a stop was hit."""
        self.text += piece
        if self.stops:
            start = max(0, self.sent - self.hold)
            hits = [i for stop in self.stops if (i := self.text.find(stop, start)) != -1]
            if hits:
                self.text = self.text[: min(hits)]
                return self.flush(), True
        ready = len(self.text) - self.hold
        if ready <= self.sent:
            return "", False
        out, self.sent = self.text[self.sent : ready], ready
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent :], len(self.text)
        return out


class IncrementalDecoder:
    """Decodes a growing list of token ids piece by piece: a piece is emitted once it no
    longer ends in a partial UTF-8 character (the sliding-window method of TGI and vLLM)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        decode = self.tokenizer.decode
        before = str(
            decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        )
        now = str(decode(self.ids[self.prefix_offset :], skip_special_tokens=True))
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return now[len(before) :]
        return ""

    def full_text(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))


class Generation:
    """One request's generation. Iterate `pieces()` for the text; then read `finish_reason`,
    `completion_tokens`. Closing the iterator early (a client went away) stops generating."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        token_timeout: float,
        on_tokens: Callable[[int], None] = lambda n: None,
        on_running: Callable[[int], None] = lambda change: None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids
        self.params = params
        self.token_timeout = token_timeout
        self.on_tokens = on_tokens
        self.on_running = on_running
        self.stop_flag = threading.Event()
        self.completion_tokens = 0
        self.finish_reason = "length"
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    async def pieces(self) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        thread = threading.Thread(
            target=self._run, args=(loop, queue), name="generate", daemon=True
        )
        thread.start()
        self.on_running(1)
        decoder = IncrementalDecoder(self.tokenizer)
        matcher = StopMatcher(self.params.stop)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.token_timeout)
                except TimeoutError:
                    raise GenerationFailed(
                        f"no token for {self.token_timeout:g} s; generation was stopped"
                    ) from None
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise GenerationFailed(f"generation failed: {item}") from item
                if self.stop_flag.is_set():
                    continue  # a stop sequence was hit: the rest is discarded
                if item and item[-1] in self._eos:
                    self.finish_reason = "stop"
                out, stopped = matcher.feed(decoder.add(item))
                if stopped:
                    self.finish_reason = "stop"
                    self.stop_flag.set()
                if out:
                    yield out
            if not self.stop_flag.is_set():
                # What the window still held, completed against one decode of the whole text.
                matcher.feed(decoder.full_text()[len(matcher.text) :])
                rest = matcher.flush()
                if rest:
                    yield rest
        finally:
            # Normal end, client gone (GeneratorExit / CancelledError) or error: stop at once.
            self.stop_flag.set()
            self.on_running(-1)

    async def text(self) -> str:
        return "".join([piece async for piece in self.pieces()])

    def _run(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        def post(item: Any) -> None:
            # The worker may be shutting down, its loop closed: nobody is listening then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            import torch
            from transformers import StoppingCriteria, StoppingCriteriaList
            from transformers.generation.streamers import BaseStreamer

            generation = self

            class Streamer(BaseStreamer):
                prompt_seen = False

                def put(self, value: Any) -> None:
                    if not self.prompt_seen:  # generate() hands over the prompt first
                        self.prompt_seen = True
                        return
                    ids = [int(token) for token in value.reshape(-1).tolist()]
                    generation.completion_tokens += len(ids)
                    generation.on_tokens(len(ids))
                    post(ids)

                def end(self) -> None:
                    post(_END)

            class StopWhenAsked(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    return torch.full(
                        (input_ids.shape[0],),
                        generation.stop_flag.is_set(),
                        dtype=torch.bool,
                        device=input_ids.device,
                    )

            device = next(self.model.parameters()).device
            input_ids = torch.tensor([self.prompt_ids], dtype=torch.long, device=device)
            with torch.inference_mode():
                if self.params.seed is not None:
                    # Process-wide: reproducible while no other sampled request overlaps.
                    torch.manual_seed(self.params.seed)
                self.model.generate(  # type: ignore[operator]
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config(self.model, self.params),
                    streamer=Streamer(),
                    stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
                )
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            post(exc)


def generation_config(model: PreTrainedModel, params: SamplingParams) -> Any:
    """The model's own generation config (eos, penalties...) with the request's sampling.

    OpenAI's defaults apply: temperature 1 and top_p 1, no top-k; temperature 0 is greedy."""
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = params.max_new_tokens
    temperature = 1.0 if params.temperature is None else params.temperature
    if temperature == 0:
        config.do_sample = False
        config.temperature = None
        config.top_p = None
        config.top_k = None
    else:
        config.do_sample = True
        config.temperature = temperature
        config.top_p = 1.0 if params.top_p is None else params.top_p
        config.top_k = None
    if config.pad_token_id is None:
        eos = config.eos_token_id
        config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return config
