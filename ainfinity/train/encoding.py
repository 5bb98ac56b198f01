"""Token ids and loss labels for `text` and `prompt_completion` rows, at full length.

Truncation comes later (`tokenization`), so token statistics can see how long rows really are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ainfinity.train.dataset import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TokenizedRow = tuple[list[int], list[int]]
"""`(input_ids, labels)` of one row; labels are IGNORE_INDEX where nothing is learnt."""


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Tokenize a batch of texts in one call (a fast tokenizer's Rust loop), no special tokens."""
    if not texts:
        return []
    # Special tokens are placed by the callers; letting the tokenizer add its own would double them.
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]
    return [list(ids) for ids in encoded]


def eos_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id every training row ends with: without it a model never learns to stop."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token")
    return int(eos)


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[TokenizedRow]:
    """`[bos] + text + [eos]`, every token learnt (bos only when the tokenizer has one)."""
    bos, eos = _bos(tokenizer), eos_token_id(tokenizer)
    rows: list[TokenizedRow] = []
    for ids in token_ids(tokenizer, texts):
        input_ids = bos + ids + [eos]
        rows.append((input_ids, list(input_ids)))
    return rows


def encode_prompt_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[str],
    *,
    completion_only_loss: bool,
) -> list[TokenizedRow]:
    """`[bos] + prompt + completion + [eos]`; with `completion_only_loss` bos and prompt are masked.

    Prompt and completion are tokenized separately, so the boundary between them is exact even
    for a tokenizer whose merges would join the prompt's last characters to the completion's.
    """
    bos, eos = _bos(tokenizer), eos_token_id(tokenizer)
    rows: list[TokenizedRow] = []
    pairs = zip(token_ids(tokenizer, prompts), token_ids(tokenizer, completions), strict=True)
    for prompt_ids, completion_ids in pairs:
        masked = bos + prompt_ids
        learnt = completion_ids + [eos]
        input_ids = masked + learnt
        if completion_only_loss:
            labels = [IGNORE_INDEX] * len(masked) + learnt
        else:
            labels = list(input_ids)
        rows.append((input_ids, labels))
    return rows
