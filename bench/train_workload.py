"""What `train_throughput.py` trains: the model presets, the random-init model and the data.

Both variants of the benchmark load the same saved model and read the same generated rows, so
only how they train differs.
"""

from __future__ import annotations

import json
import math
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Preset:
    shape: dict[str, Any]  # LlamaConfig arguments
    seq: int
    rows: int


PRESETS = {
    # Llama-3.2-1B's shape with a 32k vocabulary, untied: 1.04e9 parameters in matmuls.
    "gpu": Preset(
        shape={
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 32000,
        },
        seq=2048,
        rows=1024,
    ),
    "cpu": Preset(
        shape={
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 260,
        },
        seq=256,
        rows=192,
    ),
}


def build_model(directory: Path, shape: dict[str, Any], seq: int, seed: int) -> dict[str, int]:
    """Save a random-init Llama and the byte tokenizer; return the sizes FLOPs are counted from."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ainfinity.train.tiny_model import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()  # 260 ids; a larger vocab_size only widens the matmuls
    config = LlamaConfig(
        **shape,
        max_position_embeddings=max(2048, seq),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    # The input embedding is a lookup, not a matmul; the untied LM head is a matmul.
    embedding = model.model.embed_tokens.weight.numel()
    return {
        "parameters": model.num_parameters(),
        "matmul_parameters": model.num_parameters() - embedding,
        "layers": config.num_hidden_layers,
        "attention_width": config.num_attention_heads * model.model.layers[0].self_attn.head_dim,
    }


def write_rows(path: Path, rows: int, seq: int, seed: int) -> None:
    """Text rows of lowercase words (one byte token per character), lengths lognormal."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as sink:
        for _ in range(rows):
            length = min(seq, max(8, round(rng.lognormvariate(math.log(seq / 4), 0.9))))
            words: list[str] = []
            while sum(map(len, words)) + len(words) < length:
                words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))))
            sink.write(json.dumps({"text": " ".join(words)[:length]}) + "\n")


def recipe_lengths(model_dir: Path, data: Path, seq: int) -> list[int]:
    """Each row's token count as the recipe trains it, tokenized and cut by the trainer's code."""
    from transformers import AutoTokenizer

    from ainfinity.train.dataset import load_examples

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [len(e["input_ids"]) for e in load_examples(data, tokenizer, max_seq_length=seq)]
