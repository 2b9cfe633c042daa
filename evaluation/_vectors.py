"""The data space's vectors for an evaluation: recall embeddings of the corpus (cached as
``.npy``), the Edge collection built from them, and the kernel vectors of recalled candidates
(cached as they are first needed).

Split from :mod:`._harness` so that the harness is about running arms, not about building and
caching vectors; the ``docs/eval/scripts`` reuse these helpers on a run folder too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._corpus import Corpus

__all__ = ["KernelCache", "corpus_store", "embed_corpus"]


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit


def _texts_key(texts: Iterable[str], embedder: Any) -> str:
    name = getattr(embedder, "name_or_path", type(embedder).__name__)
    h = hashlib.blake2b(f"{name}:{getattr(embedder, 'dim', '')}".encode(), digest_size=16)
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def embed_corpus(corpus: Corpus, embedder: Any, cache: Path | None = None) -> np.ndarray:
    """(chunks, d) float32 unit vectors; cached as ``.npy`` (with a key of the texts) on request.

    Identical texts are embedded once (a redundant data space repeats many of them).
    """
    texts = [c.text for c in corpus.chunks]
    key = _texts_key(texts, embedder)
    key_file = cache.with_suffix(".key") if cache is not None else None
    if (
        cache is not None
        and key_file is not None
        and cache.exists()
        and key_file.exists()
        and key_file.read_text(encoding="utf-8").strip() == key
    ):
        cached: np.ndarray = np.load(cache)
        return cached
    distinct = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(distinct)}
    emb = _unit(np.asarray(embedder.embed_documents(distinct), np.float32))
    emb = np.ascontiguousarray(emb[[index[t] for t in texts]])
    if cache is not None and key_file is not None:
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(cache)
        key_file.write_text(key, encoding="utf-8")
    return emb


def corpus_store(corpus: Corpus, vectors: np.ndarray, path: Path) -> Any:
    """An Edge collection of the data space (point id = chunk id, text in the payload).

    Reused when it already holds exactly these chunks; rebuilt otherwise. Exact search (Edge
    builds no HNSW index until ``optimize()``), so recall is not a source of noise.
    """
    from qdrant_sift.client.stores import EdgeStore

    store = EdgeStore(path, collection="eval")
    marker = path / "corpus.key"
    key = _texts_key((c.text for c in corpus.chunks), f"{vectors.shape}")
    if store.exists() and marker.exists() and marker.read_text(encoding="utf-8") == key:
        return store
    store.drop()
    store.create(int(vectors.shape[1]), distance="cosine")
    step = 2048
    for start in range(0, len(corpus.chunks), step):
        part = corpus.chunks[start : start + step]
        store.upsert(
            [c.id for c in part],
            vectors[start : start + len(part)],
            [{"text": c.text, "domain": c.domain, "doc_id": c.doc_id} for c in part],
        )
    flush = getattr(store, "flush", None)
    if callable(flush):
        flush()
    marker.write_text(key, encoding="utf-8")
    return store


class KernelCache:
    """Kernel vectors of texts under one embedder, appended to disk as they are first needed.

    The model kernel costs a forward pass per text, so only recalled candidates are embedded,
    once per run folder (two files: raw float32 rows and their text hashes, one per line).
    """

    def __init__(self, embedder: Any, path: Path | None) -> None:
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self.path = path
        self.rows: dict[str, np.ndarray] = {}
        if path is not None and path.with_suffix(".keys").exists() and path.exists():
            keys = path.with_suffix(".keys").read_text(encoding="utf-8").split()
            flat = np.fromfile(path, dtype=np.float32)
            n = min(len(keys), flat.size // self.dim)
            mat = flat[: n * self.dim].reshape(n, self.dim)
            self.rows = {k: mat[i] for i, k in enumerate(keys[:n])}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self.rows))
        if todo:
            by_key = {self.key(t): t for t in texts}
            new = _unit(np.asarray(self.embedder.embed_documents([by_key[k] for k in todo])))
            new = new.astype(np.float32)
            if self.path is not None:
                with self.path.open("ab") as fh:
                    fh.write(new.tobytes())
                with self.path.with_suffix(".keys").open("a", encoding="utf-8") as fh:
                    fh.write("".join(k + "\n" for k in todo))
            self.rows.update(zip(todo, new, strict=True))
        return np.stack([self.rows[k] for k in keys]) if keys else np.zeros((0, self.dim))
