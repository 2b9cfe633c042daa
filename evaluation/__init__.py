"""Does test-time fine-tuning on SIFT's picks teach the model more than nearest neighbours?

``qdrant-sift eval`` and :func:`evaluate` hold out prompts from a corpus (or from a user's own
collection), recall candidates from a real Qdrant store, let each arm (nearest neighbours, SIFT at
some λ and kernel, MMR, the engine's MMR, random) pick N of them, take one LoRA step per pick and
measure the prompt's bits per byte at every N. :func:`paired_comparison` turns the rows into
paired differences with a bootstrap interval. The run-folder helpers (:func:`corpus_store`,
:class:`KernelCache`, :func:`recall_candidates`, :func:`split_prompts`, :func:`normalized_hash`)
let analyses such as ``docs/eval/scripts`` redo a run's recall and splits without the harness.
Names load lazily (PEP 562): importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes

if TYPE_CHECKING:
    from ._arms import ARM_KERNELS, ARM_STRATEGIES, Arm, parse_arms
    from ._corpus import (
        Corpus,
        CorpusChunk,
        Prompt,
        build_corpus,
        load_documents,
        normalized_hash,
        token_chunker,
    )
    from ._corpus_sources import DEFAULT_SOURCES, SourceDocument, collect_default_documents
    from ._harness import DEFAULT_ARMS, TIE_MARGIN, EvalConfig, recall_candidates, run_evaluation
    from ._plots import write_plots
    from ._redundancy import inject_redundancy, near_copy
    from ._report import paired_comparison, summarize, write_reports
    from ._results import ResultStore
    from ._setup import PRESETS, EvalPreset, evaluate, prepare, split_prompts, tiny_model
    from ._vectors import KernelCache, corpus_store, embed_corpus

__all__ = [
    "ARM_KERNELS",
    "ARM_STRATEGIES",
    "DEFAULT_ARMS",
    "DEFAULT_SOURCES",
    "PRESETS",
    "TIE_MARGIN",
    "Arm",
    "Corpus",
    "CorpusChunk",
    "EvalConfig",
    "EvalPreset",
    "KernelCache",
    "Prompt",
    "ResultStore",
    "SourceDocument",
    "build_corpus",
    "collect_default_documents",
    "corpus_store",
    "embed_corpus",
    "evaluate",
    "inject_redundancy",
    "load_documents",
    "near_copy",
    "normalized_hash",
    "paired_comparison",
    "parse_arms",
    "prepare",
    "recall_candidates",
    "run_evaluation",
    "split_prompts",
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
            "normalized_hash",
            "token_chunker",
        ],
        "._corpus_sources": ["DEFAULT_SOURCES", "SourceDocument", "collect_default_documents"],
        "._harness": [
            "DEFAULT_ARMS",
            "TIE_MARGIN",
            "EvalConfig",
            "recall_candidates",
            "run_evaluation",
        ],
        "._results": ["ResultStore"],
        "._redundancy": ["inject_redundancy", "near_copy"],
        "._vectors": ["KernelCache", "corpus_store", "embed_corpus"],
        "._report": ["paired_comparison", "summarize", "write_reports"],
        "._setup": ["PRESETS", "EvalPreset", "evaluate", "prepare", "split_prompts", "tiny_model"],
        "._plots": ["write_plots"],
    },
)
