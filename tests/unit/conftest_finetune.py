"""Tiny random causal LMs with a real byte-level tokenizer, built from a config (no downloads)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CHAT_TEMPLATE", "base_state", "byte_tokenizer", "tiny_gpt2", "tiny_llama"]

torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(chat_template: str | None = None) -> Any:
    """The evaluation preset's byte-level tokenizer, optionally with a chat template."""
    from qdrant_sift.eval._setup import byte_level_tokenizer

    fast = byte_level_tokenizer()
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def tiny_llama(max_positions: int = 128, seed: int = 0) -> tuple[Any, Any]:
    """The evaluation preset's tiny random Llama, with a chat template on its tokenizer."""
    from qdrant_sift.eval import tiny_model

    model, tokenizer = tiny_model(seed=seed, max_positions=max_positions)
    tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer


def tiny_gpt2(max_positions: int = 128, seed: int = 0) -> tuple[Any, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=300,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=max_positions,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = GPT2LMHeadModel(config).eval()
    return model, byte_tokenizer(None)


def base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Clones of every non-LoRA parameter and buffer, keyed by the name without peft's prefix."""
    out = {}
    for name, t in model.state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        out[key] = t.detach().clone()
    return out
