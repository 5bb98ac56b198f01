"""Sequence packing: several examples per row, without attention between them.

Padding a batch to its longest row wastes compute on pad tokens. Packing concatenates examples
instead, and the position ids, which restart at 0 for every example, tell the model where one
ends: with no `attention_mask`, transformers derives a block-diagonal causal mask from them for
sdpa and eager attention and variable-length kernels for flash_attention_2. Each token then sees
only its own example, so the loss and gradients are the ones padding would give; only the
throughput changes.

That mask is only built when the model runs without a KV cache, as the HF Trainer does
(`TrainingArguments.use_cache` defaults to False). A forward pass with `use_cache=True` would
let every example attend to the ones packed before it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ainfinity.train.dataset import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

PACKED_KEYS = ("input_ids", "labels", "position_ids")
REAL_TOKENS_KEY = "num_real_tokens"
"""Batch key of `PackedRowsCollator`: the tokens that are not padding. The trainer's token
counter reads it and removes it before the batch reaches the model."""


def pack_examples(
    examples: Sequence[dict[str, list[int]]], max_seq_length: int
) -> list[dict[str, list[int]]]:
    """Group examples into packs of at most `max_seq_length` tokens by best-fit decreasing.

    Longest examples go first, each into the fullest pack that still has room, so few packs are
    needed; ties keep the input order, so the same examples always give the same packs. A pack
    has `input_ids`, `labels` and `position_ids` (0, 1, ... again for each example). The first
    label of every example is IGNORE_INDEX: the token before it belongs to another example, so
    nothing there can be predicted.

    Raises:
        ValueError: an example is longer than `max_seq_length`.
    """
    if max_seq_length < 1:
        raise ValueError("max_seq_length must be at least 1")
    order = sorted(range(len(examples)), key=lambda index: -len(examples[index]["input_ids"]))
    members: list[list[int]] = []
    # (room left, pack index), sorted: bisection finds the fullest pack that fits.
    open_packs: list[tuple[int, int]] = []
    for index in order:
        length = len(examples[index]["input_ids"])
        if length > max_seq_length:
            raise ValueError(
                f"example {index} has {length} tokens, more than max_seq_length={max_seq_length}"
            )
        slot = bisect_left(open_packs, (length, -1))
        if slot < len(open_packs):
            room, pack = open_packs.pop(slot)
            members[pack].append(index)
        else:
            room, pack = max_seq_length, len(members)
            members.append([index])
        if room > length:
            insort(open_packs, (room - length, pack))
    return [_concatenate([examples[index] for index in pack]) for pack in members]


def _concatenate(examples: Sequence[dict[str, list[int]]]) -> dict[str, list[int]]:
    packed: dict[str, list[int]] = {key: [] for key in PACKED_KEYS}
    for example in examples:
        input_ids = example["input_ids"]
        labels = example["labels"]
        if len(labels) != len(input_ids):
            raise ValueError("an example's labels and input_ids differ in length")
        packed["input_ids"] += input_ids
        packed["labels"] += [IGNORE_INDEX, *labels[1:]]
        packed["position_ids"] += list(range(len(input_ids)))
    return packed


@dataclass(frozen=True)
class PaddingFreeCollator:
    """Concatenate a batch of packs (or plain examples) into one `(1, total)` row, no padding.

    The batch has `input_ids`, `labels` and `position_ids` and deliberately no `attention_mask`:
    that is what makes transformers build the per-example mask from the position ids. Plain
    `load_examples` rows are accepted too; they get position ids and a masked first label here.
    """

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Return the row as long tensors; no token attends across an example boundary."""
        import torch

        packs = [row if "position_ids" in row else _concatenate([row]) for row in features]
        return {
            key: torch.tensor([[value for row in packs for value in row[key]]], dtype=torch.long)
            for key in PACKED_KEYS
        }


@dataclass(frozen=True)
class PackedRowsCollator:
    """Stack a batch of packs as rows `(batch, longest pack)`, right-padded; for sdpa and eager.

    Those kernels cost the square of the row length whatever the mask, so one long row (what
    `PaddingFreeCollator` builds for flash_attention_2's variable-length kernel) would cost as
    much as a sequence `batch` times longer. Per-pack rows keep the cost at one pack each; the
    little padding left after best-fit packing continues the last example's positions, so with
    the causal mask no real token ever attends to it, and its labels are IGNORE_INDEX.
    """

    pad_token_id: int

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Return the rows as long tensors, plus the count of real tokens (`REAL_TOKENS_KEY`)."""
        import torch

        packs = [row if "position_ids" in row else _concatenate([row]) for row in features]
        longest = max(len(pack["input_ids"]) for pack in packs)
        rows: dict[str, list[list[int]]] = {key: [] for key in PACKED_KEYS}
        for pack in packs:
            missing = longest - len(pack["input_ids"])
            last = pack["position_ids"][-1]
            rows["input_ids"].append(pack["input_ids"] + [self.pad_token_id] * missing)
            rows["labels"].append(pack["labels"] + [IGNORE_INDEX] * missing)
            rows["position_ids"].append(
                pack["position_ids"] + list(range(last + 1, last + 1 + missing))
            )
        batch = {key: torch.tensor(value, dtype=torch.long) for key, value in rows.items()}
        batch[REAL_TOKENS_KEY] = torch.tensor(sum(len(pack["input_ids"]) for pack in packs))
        return batch
