"""SIFT's kernel apart from recall: named model kernels, and kernel vectors computed from texts.

Recall always runs on the collection's recall vector. SIFT may select in another embedding, its
*kernel*: stored in the collection as a second named vector (``ingest(kernel_embedder=…)``,
``qdrant-sift ingest --kernel model-mean``), or, where the collection has none, computed from the
candidates' texts and kept in a small LRU cache keyed by the text's content hash.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.errors import ConfigError, DimensionMismatchError

__all__ = [
    "KERNELS",
    "KERNEL_CACHE_SIZE",
    "KernelCache",
    "SelectionKernel",
    "check_kernel_embedder",
    "check_kernel_name",
    "model_kernel",
    "resolve_kernel",
]

#: Kernels by name: the language model's own last hidden layer, mean- or last-token-pooled.
KERNELS: tuple[str, ...] = ("model-mean", "model-last")
#: Kernel vectors of texts kept in memory per client (about 9 MB at SmolLM2's 576 dimensions).
KERNEL_CACHE_SIZE = 4096


def check_kernel_name(kernel: Any) -> str:
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return str(kernel)


def check_kernel_embedder(embedder: Any) -> Any:
    """An ``Embedder`` (``dim``, ``embed_documents``, ``embed_query``), or a ``ConfigError``."""
    missing = [
        name
        for name in ("dim", "embed_documents", "embed_query")
        if not hasattr(embedder, name) or (name != "dim" and not callable(getattr(embedder, name)))
    ]
    if missing:
        raise ConfigError(
            f"kernel_embedder must implement the Embedder protocol; {type(embedder).__name__} "
            f"lacks {missing}"
        )
    return embedder


def model_kernel(kernel: str, model: Any, tokenizer: Any, *, max_tokens: int = 512) -> Any:
    """A ``ModelEmbedder`` for ``"model-mean"`` / ``"model-last"`` (imports torch)."""
    from qdrant_sift.finetune import ModelEmbedder

    pooling = check_kernel_name(kernel).removeprefix("model-")
    return ModelEmbedder(model, tokenizer, pooling=pooling, max_tokens=max_tokens)


class KernelCache:
    """Kernel vectors of texts through ``embedder``; an LRU of ``maxsize`` rows keyed by the
    SHA-256 of the text, so a chunk recalled again is not embedded again. Thread-safe."""

    def __init__(self, embedder: Any, maxsize: int = KERNEL_CACHE_SIZE) -> None:
        self.embedder = embedder
        self.maxsize = maxsize
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, row for row; only texts not cached are embedded."""
        dim = int(self.embedder.dim)
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        with self._lock:
            rows = {k: self._rows[k] for k in keys if k in self._rows}
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in rows}
        if todo:
            raw = self.embedder.embed_documents(list(todo.values()))
            new = as_float32_matrix(raw, "kernel embeddings", allow_empty=True)
            if new.shape != (len(todo), dim):
                raise DimensionMismatchError(
                    f"kernel embedder returned shape {new.shape} for {len(todo)} texts (dim {dim})"
                )
            rows.update(zip(todo, new, strict=True))
        with self._lock:
            for k in keys:
                self._rows[k] = rows[k]
                self._rows.move_to_end(k)
            while len(self._rows) > self.maxsize:
                self._rows.popitem(last=False)
        if not keys:
            return np.zeros((0, dim), np.float32)
        return np.ascontiguousarray(np.stack([rows[k] for k in keys]), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)


class SelectionKernel:
    """Where one client's SIFT kernel comes from: the kernel vectors stored in the collection
    when it has them, else the candidates' texts embedded (and cached) on the fly; the query's
    kernel vector is always ``embed_query(prompt)``. The embedder is built on first use."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._cache: KernelCache | None = None
        self._lock = threading.Lock()

    def _built(self) -> KernelCache:
        with self._lock:
            if self._cache is None:
                self._cache = KernelCache(check_kernel_embedder(self._factory()))
            return self._cache

    @property
    def embedder(self) -> Any:
        return self._built().embedder

    def stored(self, store: Any) -> bool:
        """Whether ``store`` holds kernel vectors of this kernel's size (else an error)."""
        have = store.kernel_dim
        if have is not None and have != int(self.embedder.dim):
            raise DimensionMismatchError(
                f"collection {store.collection!r} stores {have}-d kernel vectors; the kernel "
                f"embedder gives {self.embedder.dim}-d ones (use the kernel it was ingested with)"
            )
        return have is not None

    def for_writing(self, store: Any) -> Any:
        """The embedder to store kernel vectors with: for a new collection or one holding them."""
        return self.embedder if not store.exists() or store.kernel_dim is not None else None

    def inputs(self, prompt: str, candidates: Any, text_key: str) -> tuple[np.ndarray, np.ndarray]:
        """(query kernel vector, candidates' kernel rows) for SIFT."""
        dim = int(self.embedder.dim)
        query = as_float32_matrix(self.embedder.embed_query(prompt), "kernel query vector")
        if query.shape != (1, dim):
            raise DimensionMismatchError(
                f"kernel embedder's query vector has shape {query.shape[1:]}, expected ({dim},)"
            )
        query = query[0]
        if candidates.kernel_vectors is not None:
            return query, candidates.kernel_vectors
        texts = []
        for pid, payload in zip(candidates.ids, candidates.payloads, strict=True):
            text = (payload or {}).get(text_key)
            if not isinstance(text, str) or not text:
                raise ConfigError(
                    f"point {pid!r} has no text under payload key {text_key!r} to compute its "
                    "kernel from; store kernel vectors (qdrant-sift ingest … --kernel) or pass "
                    "text_key="
                )
            texts.append(text)
        return query, self._built().vectors(texts)


def resolve_kernel(kernel: Any, kernel_embedder: Any, tuner: Callable[[], Any]) -> Any:
    """A :class:`SelectionKernel` for ``SiftClient(kernel=…)`` or ``(kernel_embedder=…)``, or
    None (SIFT on the recall vectors). Checked at once; the model kernel loads on first use."""
    if kernel is not None and kernel_embedder is not None:
        raise ConfigError("pass kernel= or kernel_embedder=, not both")
    if kernel_embedder is not None:
        check_kernel_embedder(kernel_embedder)
        return SelectionKernel(lambda: kernel_embedder)
    if kernel is None:
        return None
    check_kernel_name(kernel)

    def build() -> Any:
        t = tuner()
        return model_kernel(kernel, t.model, t.tokenizer)

    return SelectionKernel(build)
