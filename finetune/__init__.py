"""Test-time LoRA fine-tuning, model loading, generation and bits-per-byte evaluation.

``TestTimeTuner(model, tokenizer, TuneConfig())`` takes one Adam step per selected chunk, answers
the prompt and resets the adapter; ``load_model()`` gives the offline SmolLM2 default (or any
Hugging Face causal LM); ``bits_per_byte`` scores text as lm-evaluation-harness does.

Names load lazily (PEP 562): importing this package, or ``_cmd_eval`` for the CLI, does not
import torch; the first use of a name imports the submodule that defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes

if TYPE_CHECKING:
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
    from ._corpus import (
        Chunk,
        Corpus,
        Prompt,
        build_corpus,
        dedup_documents,
        load_documents,
        token_chunker,
    )
    from ._corpus_sources import DEFAULT_SOURCES, Document, collect_default_documents
    from ._eval_report import summarize, write_reports
    from ._eval_setup import PRESETS as EVAL_PRESETS
    from ._eval_setup import EvalPreset, evaluate, hashing_embedder, tiny_model
    from ._evaluate import (
        EVAL_STRATEGIES,
        EvalConfig,
        ResultStore,
        recall_candidates,
        run_evaluation,
    )
    from ._models import (
        CACHE_MARKER,
        DEFAULT_MODEL_NAME,
        WeightSnapshot,
        attach_lora,
        build_cache_atomically,
        context_length_of,
        convert_to_safetensors,
        default_model_cache,
        default_target_modules,
        load_model,
        smollm2_gguf_path,
    )
    from ._plots import write_plots
    from ._tuner import TestTimeTuner

__all__ = [
    "CACHE_MARKER",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_SOURCES",
    "EVAL_PRESETS",
    "EVAL_STRATEGIES",
    "FULL_LEARNING_RATE",
    "LORA_LEARNING_RATE",
    "AdaptOutcome",
    "BpbResult",
    "Chunk",
    "Corpus",
    "Document",
    "EvalConfig",
    "EvalPreset",
    "Prompt",
    "ResultStore",
    "StepReport",
    "TestTimeTuner",
    "TuneConfig",
    "TuneReport",
    "WeightSnapshot",
    "attach_lora",
    "bits_per_byte",
    "build_cache_atomically",
    "build_corpus",
    "collect_default_documents",
    "context_length_of",
    "convert_to_safetensors",
    "dedup_documents",
    "default_model_cache",
    "default_target_modules",
    "evaluate",
    "hashing_embedder",
    "load_documents",
    "load_model",
    "prefix_token_id",
    "recall_candidates",
    "resolve_dtype",
    "rolling_windows",
    "run_evaluation",
    "smollm2_gguf_path",
    "summarize",
    "tiny_model",
    "token_chunker",
    "write_plots",
    "write_reports",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    {
        "._bpb": ["BpbResult", "bits_per_byte", "prefix_token_id", "rolling_windows"],
        "._config": [
            "FULL_LEARNING_RATE",
            "LORA_LEARNING_RATE",
            "AdaptOutcome",
            "StepReport",
            "TuneConfig",
            "TuneReport",
            "resolve_dtype",
        ],
        "._corpus": [
            "Chunk",
            "Corpus",
            "Prompt",
            "build_corpus",
            "dedup_documents",
            "load_documents",
            "token_chunker",
        ],
        "._corpus_sources": ["DEFAULT_SOURCES", "Document", "collect_default_documents"],
        "._eval_report": ["summarize", "write_reports"],
        "._eval_setup": [
            "PRESETS as EVAL_PRESETS",
            "EvalPreset",
            "evaluate",
            "hashing_embedder",
            "tiny_model",
        ],
        "._evaluate": [
            "EVAL_STRATEGIES",
            "EvalConfig",
            "ResultStore",
            "recall_candidates",
            "run_evaluation",
        ],
        "._models": [
            "CACHE_MARKER",
            "DEFAULT_MODEL_NAME",
            "WeightSnapshot",
            "attach_lora",
            "build_cache_atomically",
            "context_length_of",
            "convert_to_safetensors",
            "default_model_cache",
            "default_target_modules",
            "load_model",
            "smollm2_gguf_path",
        ],
        "._plots": ["write_plots"],
        "._tuner": ["TestTimeTuner"],
    },
)
