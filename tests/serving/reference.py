"""What `generate()` gives for a saved model, computed here with transformers alone (none of
the worker's code), to compare the served answers against."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_saved(output_dir: Path, *, lora_base_seed: int | None = None) -> tuple[Any, Any]:
    """A full fine-tune's directory, or (with the base's seed) a LoRA adapter over the tiny
    built-in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    if lora_base_seed is None:
        model = AutoModelForCausalLM.from_pretrained(output_dir)
    else:
        from peft import PeftModel

        from ainfinity.train.tiny_model import build_tiny_random_llama

        base, _ = build_tiny_random_llama(lora_base_seed)
        model = PeftModel.from_pretrained(base, output_dir)
    model.eval()
    return model, tokenizer


def greedy_chat(model: Any, tokenizer: Any, messages: list[dict[str, str]], tokens: int) -> str:
    """A model trained on chat rows saved its template; others get the default one, as the
    server (and a chat training run) gives them."""
    from ainfinity.train.chat import DEFAULT_CHAT_TEMPLATE

    template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return _greedy(model, tokenizer, ids, tokens)


def greedy_text(model: Any, tokenizer: Any, prompt: str, tokens: int) -> str:
    ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    return _greedy(model, tokenizer, ids, tokens)


def _greedy(model: Any, tokenizer: Any, ids: list[int], tokens: int) -> str:
    import torch

    with torch.inference_mode():
        output = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=tokens,
            do_sample=False,
        )
    return str(tokenizer.decode(output[0][len(ids) :], skip_special_tokens=True))
