"""Chat rows: render conversations with the tokenizer's chat template and find assistant tokens.

Masking works on any template, not only those with `{% generation %}` tags: for each assistant
turn `i` the conversation before it is rendered with the generation prompt, `messages[:i]`, and
the conversation through it, `messages[:i + 1]`; the characters between the two renderings are
what the model must produce after the generation prompt (the content and the end-of-turn
marker). The whole conversation is then tokenized once, and a token is learnt when its
characters overlap such a span. That needs the template to render a conversation as an
extension of its prefixes; a template that rewrites earlier turns (one that drops the reasoning
of past turns, say) is refused with the reason rather than masked wrongly.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import TYPE_CHECKING

from ainfinity.train.dataset import IGNORE_INDEX
from ainfinity.train.encoding import TokenizedRow, token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]
Conversation = list[Message]

DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token is defined and bos_token else '' -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
"""ChatML's layout with the tokenizer's eos token closing every turn instead of `<|im_end|>`.

Reusing eos needs no new token (so no embedding resize), and `generate()` stops on eos by
default, so a model trained on assistant turns that end with it learns to stop on its own.
"""


class ChatTemplateError(ValueError):
    """A conversation that the chat template cannot render, or whose turns it cannot mask."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give a tokenizer without a chat template `DEFAULT_CHAT_TEMPLATE`; True if it was added.

    The template is set on the tokenizer object, so `save_pretrained` writes it next to the
    model and inference renders prompts exactly as training did.
    """
    if tokenizer.chat_template:
        return False
    if tokenizer.eos_token is None:
        raise ValueError("the default chat template needs an eos token to end turns with")
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    completion_only_loss: bool,
) -> list[TokenizedRow]:
    """Render and tokenize conversations; learn assistant turns only, or every token.

    Installs the default chat template when the tokenizer has none.

    Raises:
        ChatTemplateError: the template fails on a conversation or cannot be masked; `index`
            says which conversation.
    """
    ensure_chat_template(tokenizer)
    texts = render_conversations(tokenizer, conversations, add_generation_prompt=False)
    if not completion_only_loss:
        return [(ids, list(ids)) for ids in token_ids(tokenizer, texts)]
    if not tokenizer.is_fast:
        raise ValueError("masking chat rows needs a fast tokenizer (for character offsets)")
    spans = assistant_spans(tokenizer, conversations, texts)
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_offsets_mapping=True,
    )
    rows: list[TokenizedRow] = []
    for ids, offsets, learnt in zip(
        encoded["input_ids"], encoded["offset_mapping"], spans, strict=True
    ):
        rows.append((ids, _label_spans(ids, offsets, learnt)))
    return rows


def render_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    add_generation_prompt: bool,
) -> list[str]:
    """Render a batch through the chat template in one call; name the conversation that fails."""
    import jinja2

    if not conversations:
        return []
    # Templates signal bad input with raise_exception (a TemplateError), or fail on a missing key.
    template_errors = (jinja2.TemplateError, TypeError, KeyError, IndexError, ValueError)
    try:
        rendered = tokenizer.apply_chat_template(
            list(conversations), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except template_errors:
        for index, conversation in enumerate(conversations):
            try:
                tokenizer.apply_chat_template(
                    [conversation], tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except template_errors as exc:
                raise ChatTemplateError(index, f"the chat template failed: {exc}") from exc
        raise
    return [str(text) for text in rendered]


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    texts: Sequence[str],
) -> list[list[tuple[int, int]]]:
    """Character spans `[start, end)` of each assistant turn in each rendered conversation."""
    # An assistant turn of weight 0 is context, as in OpenAI's format: not learnt.
    turns = [
        (index, turn)
        for index, conversation in enumerate(conversations)
        for turn, message in enumerate(conversation)
        if message["role"] == "assistant" and message.get("weight", 1) != 0
    ]
    prompted = _render_turns(tokenizer, conversations, turns, through=False)
    # A conversation rendered through its last message is the whole rendered conversation.
    inner = [(index, turn) for index, turn in turns if turn + 1 < len(conversations[index])]
    rendered_inner = iter(_render_turns(tokenizer, conversations, inner, through=True))
    answered = [
        next(rendered_inner) if turn + 1 < len(conversations[index]) else texts[index]
        for index, turn in turns
    ]
    spans: list[list[tuple[int, int]]] = [[] for _ in conversations]
    for (index, turn), before, through in zip(turns, prompted, answered, strict=True):
        if not (through.startswith(before) and texts[index].startswith(through)):
            raise ChatTemplateError(
                index,
                f"the chat template does not render messages[{turn}] (an assistant turn) as a "
                "continuation of the conversation before it, so its tokens cannot be told apart; "
                "set completion_only_loss to false to learn whole conversations",
            )
        spans[index].append((len(before), len(through)))
    return spans


def _render_turns(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    turns: list[tuple[int, int]],
    *,
    through: bool,
) -> list[str]:
    prefixes = [conversations[index][: turn + 1 if through else turn] for index, turn in turns]
    try:
        return render_conversations(tokenizer, prefixes, add_generation_prompt=not through)
    except ChatTemplateError as exc:
        index, turn = turns[exc.index]
        raise ChatTemplateError(index, f"{exc.reason} (rendering messages[:{turn}])") from exc


def _label_spans(
    ids: list[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[int]:
    """Copy the ids of tokens overlapping a span into the labels; mask every other token.

    Without added special tokens a fast tokenizer's offsets never go backwards along the text,
    so each span's tokens are one slice found by bisection.
    """
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        first = bisect_right(offsets, start, key=_END)  # first token ending after the span starts
        stop = bisect_left(offsets, end, key=_START)  # first token starting at or after its end
        labels[first:stop] = ids[first:stop]
    return labels


_START, _END = itemgetter(0), itemgetter(1)
