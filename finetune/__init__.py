"""Test-time LoRA fine-tuning, model loading, generation and bits-per-byte evaluation.

``TestTimeTuner(model, tokenizer, TuneConfig())`` takes one Adam step per selected chunk, answers
the prompt and resets the adapter; ``load_model()`` gives the offline SmolLM2 default (or any
Hugging Face causal LM); ``bits_per_byte`` scores text as lm-evaluation-harness does.
"""

from __future__ import annotations

from ._bpb import BpbResult, bits_per_byte, prefix_token_id, rolling_windows
from ._config import (
    FULL_LEARNING_RATE,
    LORA_LEARNING_RATE,
    AdaptOutcome,
    StepReport,
    TuneConfig,
    TuneReport,
    resolve_dtype,
)
from ._models import (
    CACHE_MARKER,
    DEFAULT_MODEL_NAME,
    attach_lora,
    build_cache_atomically,
    context_length_of,
    convert_to_safetensors,
    default_model_cache,
    default_target_modules,
    load_model,
    smollm2_gguf_path,
)
from ._tuner import TestTimeTuner

__all__ = [
    "CACHE_MARKER",
    "DEFAULT_MODEL_NAME",
    "FULL_LEARNING_RATE",
    "LORA_LEARNING_RATE",
    "AdaptOutcome",
    "BpbResult",
    "StepReport",
    "TestTimeTuner",
    "TuneConfig",
    "TuneReport",
    "attach_lora",
    "bits_per_byte",
    "build_cache_atomically",
    "context_length_of",
    "convert_to_safetensors",
    "default_model_cache",
    "default_target_modules",
    "load_model",
    "prefix_token_id",
    "resolve_dtype",
    "rolling_windows",
    "smollm2_gguf_path",
]
