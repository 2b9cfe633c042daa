"""Does test-time fine-tuning on SIFT's picks teach the model more than nearest neighbours?

``qdrant-sift eval`` and :func:`evaluate` hold out prompts from a corpus (or from a user's own
collection), recall candidates from a real Qdrant store, let each arm (nearest neighbours, SIFT at
some λ and kernel, MMR, the engine's MMR, random) pick N of them, take one LoRA step per pick and
measure the prompt's bits per byte at every N. :func:`paired_comparison` turns the rows into
paired differences with a bootstrap interval. Names load lazily (PEP 562): importing this package
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._arms import ARM_KERNELS, ARM_STRATEGIES, Arm, parse_arms
    from ._corpus import Corpus, CorpusChunk, Prompt, build_corpus, load_documents, token_chunker
    from ._corpus_sources import DEFAULT_SOURCES, SourceDocument, collect_default_documents
    from ._harness import DEFAULT_ARMS, EvalConfig, run_evaluation
    from ._plots import write_plots
    from ._redundancy import inject_redundancy, near_copy
    from ._report import paired_comparison, summarize, write_reports
    from ._results import ResultStore
    from ._setup import PRESETS, EvalPreset, evaluate, prepare, tiny_model
    from ._vectors import embed_corpus

__all__ = [
    "ARM_KERNELS",
    "ARM_STRATEGIES",
    "DEFAULT_ARMS",
    "DEFAULT_SOURCES",
    "PRESETS",
    "Arm",
    "Corpus",
    "CorpusChunk",
    "EvalConfig",
    "EvalPreset",
    "Prompt",
    "ResultStore",
    "SourceDocument",
    "build_corpus",
    "collect_default_documents",
    "embed_corpus",
    "evaluate",
    "inject_redundancy",
    "load_documents",
    "near_copy",
    "paired_comparison",
    "parse_arms",
    "prepare",
    "run_evaluation",
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
        "._arms": ["ARM_STRATEGIES", "ARM_KERNELS", "Arm", "parse_arms"],
        "._corpus": [
            "CorpusChunk",
            "Corpus",
            "Prompt",
            "build_corpus",
            "load_documents",
            "token_chunker",
        ],
        "._corpus_sources": ["DEFAULT_SOURCES", "SourceDocument", "collect_default_documents"],
        "._harness": ["DEFAULT_ARMS", "EvalConfig", "run_evaluation"],
        "._results": ["ResultStore"],
        "._redundancy": ["inject_redundancy", "near_copy"],
        "._vectors": ["embed_corpus"],
        "._report": ["paired_comparison", "summarize", "write_reports"],
        "._setup": ["PRESETS", "EvalPreset", "evaluate", "prepare", "tiny_model"],
        "._plots": ["write_plots"],
    },
)
