"""SIFT's kernel apart from recall: named model kernels, and kernel vectors computed from texts.

Recall always runs on the collection's recall vector. SIFT may select in another embedding, its
*kernel*: stored in the collection as a second named vector (``ingest(kernel_embedder=…)``,
``qdrant-sift ingest --kernel model-mean``), or, where the collection has none, computed from the
candidates' texts and kept in a small LRU cache keyed by the text's content hash.

``SiftClient``'s default kernel is ``"model-mean"`` (:data:`DEFAULT_KERNEL`); ``"recall"`` selects
on the recall vectors themselves. Where the *default* kernel cannot apply (candidates with neither
stored kernel vectors nor a text payload, or a tuner without a transformers model to pool), SIFT
falls back to the recall vectors and logs a warning once; a kernel asked for by name raises.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.errors import ConfigError, DimensionMismatchError

from .stores._layout import check_kernel_id

__all__ = [
    "DEFAULT_KERNEL",
    "KERNELS",
    "KERNEL_CACHE_SIZE",
    "KERNEL_CHOICES",
    "KernelCache",
    "SelectionKernel",
    "check_kernel_embedder",
    "check_kernel_name",
    "kernel_id_of",
    "model_kernel",
    "resolve_kernel",
]

#: Kernels by name: the language model's own last hidden layer, mean- or last-token-pooled.
KERNELS: tuple[str, ...] = ("model-mean", "model-last")
#: What ``SiftClient(kernel=…)`` and the CLI's ``--kernel`` accept: a model kernel, or ``recall``.
KERNEL_CHOICES: tuple[str, ...] = (*KERNELS, "recall")
#: ``SiftClient``'s kernel when neither ``kernel=`` nor ``kernel_embedder=`` is given (docs/eval:
#: at λ = 0.03 it beat nearest neighbours at N = 10, 20 and 50 on 56 fresh held-out prompts).
DEFAULT_KERNEL = "model-mean"
#: Kernel vectors of texts kept in memory per client (about 9 MB at SmolLM2's 576 dimensions).
KERNEL_CACHE_SIZE = 4096

_log = logging.getLogger(__name__)


def kernel_id_of(embedder: Any) -> str | None:
    """An embedder's ``kernel_id`` (what its vectors are, e.g. ``ModelEmbedder``'s pooling and
    weights fingerprint), or None when it does not say: then nothing is recorded or compared."""
    kid = getattr(embedder, "kernel_id", None)
    return kid if isinstance(kid, str) and kid else None


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
    kernel vector is always ``embed_query(prompt)``. The embedder is built on first use.

    ``fallback``: the client's default kernel, which gives way to the recall vectors (a warning,
    once) where it cannot apply: :meth:`inputs` then returns None, :meth:`stored` False and
    :meth:`for_writing` None. Without it those cases raise ``ConfigError``.
    """

    def __init__(self, factory: Callable[[], Any], *, fallback: bool = False) -> None:
        self._factory = factory
        self.fallback = fallback
        self._cache: KernelCache | None = None
        self._unavailable: str | None = None  # why the fallback kernel cannot be built
        self._warned = False
        self._lock = threading.Lock()

    def _built(self) -> KernelCache | None:
        with self._lock:
            if self._cache is None and self._unavailable is None:
                try:
                    self._cache = KernelCache(check_kernel_embedder(self._factory()))
                except ConfigError as exc:
                    if not self.fallback:
                        raise
                    self._unavailable = str(exc)
            return self._cache

    def _warn_once(self, why: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        _log.warning(
            "SiftClient's default kernel (%s) cannot apply: %s; SIFT selects on the recall "
            "vectors instead (pass kernel='recall' to choose that, or store kernel vectors: "
            "qdrant-sift ingest … --kernel %s)",
            DEFAULT_KERNEL,
            why,
            DEFAULT_KERNEL,
        )

    @property
    def embedder(self) -> Any:
        built = self._built()
        if built is None:
            raise ConfigError(f"the default kernel is unavailable: {self._unavailable}")
        return built.embedder

    def stored(self, store: Any) -> bool:
        """Whether ``store`` holds kernel vectors of this kernel's size (else an error)."""
        have = store.kernel_dim  # first: a plain or missing collection loads no model here
        if have is None or self._built() is None:
            return False
        if have != int(self.embedder.dim):
            raise DimensionMismatchError(
                f"collection {store.collection!r} stores {have}-d kernel vectors; the kernel "
                f"embedder gives {self.embedder.dim}-d ones (use the kernel it was ingested with)"
            )
        self._check_same_kernel(store)
        return True

    def _check_same_kernel(self, store: Any) -> None:
        """``ConfigError`` when ``store`` recorded another kernel's id for its kernel vectors."""
        check_kernel_id(store.collection, store.kernel_id, kernel_id_of(self.embedder))

    def for_writing(self, store: Any) -> Any:
        """The embedder to store kernel vectors with: for a new collection or one holding them
        (of this kernel: another recorded kernel id is a ``ConfigError``)."""
        if not store.exists() or store.kernel_dim is not None:
            if self._built() is None:
                return None
            if store.exists():
                self._check_same_kernel(store)
            return self.embedder
        return None

    def inputs(
        self, prompt: str, candidates: Any, text_key: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(query kernel vector, candidates' kernel rows) for SIFT; None (fallback kernel
        only): select on the recall vectors."""
        cache = self._built()
        if cache is None:
            self._warn_once(str(self._unavailable))
            return None
        texts: list[str] = []
        if candidates.kernel_vectors is None:
            for pid, payload in zip(candidates.ids, candidates.payloads, strict=True):
                text = (payload or {}).get(text_key)
                if not isinstance(text, str) or not text:
                    if self.fallback:
                        self._warn_once(
                            f"point {pid!r} has no stored kernel vector and no text under "
                            f"payload key {text_key!r}"
                        )
                        return None
                    raise ConfigError(
                        f"point {pid!r} has no text under payload key {text_key!r} to compute "
                        "its kernel from; store kernel vectors (qdrant-sift ingest … --kernel) "
                        "or pass text_key="
                    )
                texts.append(text)
        embedder = cache.embedder
        dim = int(embedder.dim)
        query = as_float32_matrix(embedder.embed_query(prompt), "kernel query vector")
        if query.shape != (1, dim):
            raise DimensionMismatchError(
                f"kernel embedder's query vector has shape {query.shape[1:]}, expected ({dim},)"
            )
        if candidates.kernel_vectors is not None:
            return query[0], candidates.kernel_vectors
        return query[0], cache.vectors(texts)


def resolve_kernel(kernel: Any, kernel_embedder: Any, tuner: Callable[[], Any]) -> Any:
    """A :class:`SelectionKernel` for ``SiftClient(kernel=…)`` or ``(kernel_embedder=…)``, or
    None (``kernel="recall"``: SIFT on the recall vectors). Neither given: the
    :data:`DEFAULT_KERNEL`, with the fallback to recall. Checked at once; the model kernel loads
    on first use."""
    if kernel is not None and kernel_embedder is not None:
        raise ConfigError("pass kernel= or kernel_embedder=, not both")
    if kernel_embedder is not None:
        check_kernel_embedder(kernel_embedder)
        return SelectionKernel(lambda: kernel_embedder)
    if kernel is not None and kernel not in KERNEL_CHOICES:
        raise ConfigError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if kernel == "recall":
        return None
    name = DEFAULT_KERNEL if kernel is None else str(kernel)

    def build() -> Any:
        t = tuner()  # a model that cannot load raises here, default kernel or not
        model, tokenizer = getattr(t, "model", None), getattr(t, "tokenizer", None)
        if model is None or tokenizer is None:
            raise ConfigError(
                f"the tuner ({type(t).__name__}) has no model and tokenizer to take the "
                f"{name!r} kernel from"
            )
        return model_kernel(name, model, tokenizer)

    return SelectionKernel(build, fallback=kernel is None)
