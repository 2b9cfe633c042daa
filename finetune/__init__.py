"""Test-time LoRA fine-tuning, model loading, generation and bits-per-byte evaluation.

``TestTimeTuner(model, tokenizer, TuneConfig())`` takes one Adam step per selected chunk, answers
the prompt and resets the adapter; ``load_model()`` gives the offline SmolLM2 default (or any
Hugging Face causal LM); ``bits_per_byte`` scores text as lm-evaluation-harness does.

``ModelEmbedder`` turns the model's last layer into an embedding for SIFT's kernel. ``Tuner`` is
the protocol ``SiftClient`` needs from a tuner (``TestTimeTuner`` implements it).

Names load lazily (PEP 562): importing this package does not
import torch; the first use of a name imports the submodule that defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._bpb import BpbResult, bits_per_byte, prefix_token_id, rolling_windows
    from ._config import (
        BUILD_FIELDS,
        FULL_LEARNING_RATE,
        LORA_LEARNING_RATE,
        AdaptOutcome,
        StepReport,
        TuneConfig,
        TuneReport,
        resolve_dtype,
    )
    from ._embed import POOLINGS, ModelEmbedder
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
        load_tokenizer,
        smollm2_gguf_path,
    )
    from ._protocol import Tuner
    from ._snapshot import WeightSnapshot
    from ._tuner import TestTimeTuner

__all__ = [
    "BUILD_FIELDS",
    "CACHE_MARKER",
    "DEFAULT_MODEL_NAME",
    "FULL_LEARNING_RATE",
    "LORA_LEARNING_RATE",
    "POOLINGS",
    "AdaptOutcome",
    "BpbResult",
    "ModelEmbedder",
    "StepReport",
    "TestTimeTuner",
    "TuneConfig",
    "TuneReport",
    "Tuner",
    "WeightSnapshot",
    "attach_lora",
    "bits_per_byte",
    "build_cache_atomically",
    "context_length_of",
    "convert_to_safetensors",
    "default_model_cache",
    "default_target_modules",
    "load_model",
    "load_tokenizer",
    "prefix_token_id",
    "resolve_dtype",
    "rolling_windows",
    "smollm2_gguf_path",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    {
        "._bpb": ["BpbResult", "bits_per_byte", "prefix_token_id", "rolling_windows"],
        "._config": [
            "BUILD_FIELDS",
            "FULL_LEARNING_RATE",
            "LORA_LEARNING_RATE",
            "AdaptOutcome",
            "StepReport",
            "TuneConfig",
            "TuneReport",
            "resolve_dtype",
        ],
        "._embed": ["POOLINGS", "ModelEmbedder"],
        "._models": [
            "CACHE_MARKER",
            "DEFAULT_MODEL_NAME",
            "attach_lora",
            "build_cache_atomically",
            "context_length_of",
            "convert_to_safetensors",
            "default_model_cache",
            "default_target_modules",
            "load_model",
            "load_tokenizer",
            "smollm2_gguf_path",
        ],
        "._protocol": ["Tuner"],
        "._snapshot": ["WeightSnapshot"],
        "._tuner": ["TestTimeTuner"],
    },
)
