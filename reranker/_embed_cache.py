"""The vectors a text rerank reuses instead of embedding: an LRU :class:`EmbeddingCache` and a
collection's :class:`StoredVectors`, both keyed by :func:`content_hash` of the text.

Split from :mod:`._text` so that module is the rerank call itself (checks, embedding, selection)
and this one where its vectors come from when they are already known.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qdrant_sift import errors

__all__ = ["EmbeddingCache", "StoredVectors", "content_hash", "prefixed_hashes"]

log = logging.getLogger("qdrant_sift.reranker.service")


def content_hash(text: str) -> bytes:
    """The first 16 bytes of the SHA-256 of ``text`` (UTF-8): the cache and stored-vector key,
    never stored (SHA-256 over BLAKE2b: CPUs with SHA extensions hash 200 documents of ~100 words
    in 0.17 ms instead of 0.23 ms, and the warm path hashes every document of every call)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def prefixed_hashes(prefix: bytes, texts: list[str]) -> list[bytes]:
    """``prefix + content_hash(t)`` for every text, in one comprehension (no call per text)."""
    sha = hashlib.sha256
    return [prefix + sha(t.encode("utf-8", "surrogatepass")).digest()[:16] for t in texts]


class EmbeddingCache:
    """A thread-safe LRU of embeddings (``capacity`` rows; 0 disables it)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise errors.ConfigError(f"embedding cache size must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The cached rows of ``keys`` (absent ones left out), under one lock."""
        out: dict[bytes, np.ndarray] = {}
        with self._lock:
            rows = self._rows
            get, touch = rows.get, rows.move_to_end
            for key in keys:
                row = get(key)
                if row is not None:
                    touch(key)
                    out[key] = row
        return out

    def put(self, key: bytes, row: np.ndarray) -> None:
        if self.capacity == 0:
            return
        row = np.array(row, dtype=np.float32)  # own copy, read-only
        row.flags.writeable = False
        with self._lock:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


class StoredVectors:
    """Stored vectors of one collection, found by the content hash of their ``text`` payload.

    ``refresh()`` scrolls the collection once (payloads only) and keeps hash -> point id;
    ``lookup`` retrieves the vectors of the hashes it knows in one call; ``dim`` gives the
    embedder's dimension when asked. ``use_store`` opens the
    store for the duration of a ``with`` block (the servicer's LRU of open stores, so Recall and
    this share one handle). The collection must have been embedded by the server's embedder:
    only the dimension can be checked, and a mismatch disables the lookup at refresh.
    """

    def __init__(
        self,
        collection: str,
        use_store: Callable[[], Any],
        dim: Callable[[], int],
        text_key: str = "text",
    ) -> None:
        self.collection, self._use_store = collection, use_store
        self._dim, self._key = dim, text_key
        self._ids: dict[bytes, Any] = {}

    def refresh(self) -> int:
        """Rebuild the hash index; returns how many texts it knows."""
        ids: dict[bytes, Any] = {}
        with self._use_store() as store:
            if store.dim != self._dim():
                raise errors.DimensionMismatchError(
                    f"collection {self.collection!r} holds {store.dim}-d vectors but the server's "
                    f"embedder makes {self._dim()}-d ones: attach a collection ingested with it"
                )
            for point in store.scroll(with_vectors=False):
                text = point.payload.get(self._key)
                if isinstance(text, str):
                    ids.setdefault(content_hash(text), point.id)
        self._ids = ids
        log.info("stored vectors indexed", extra={"collection": self.collection, "texts": len(ids)})
        return len(ids)

    def refresh_in_background(self) -> threading.Thread:
        """``refresh()`` on a daemon thread (serving starts at once; a failure is logged and
        leaves the lookup off: every document is embedded, nothing is wrong)."""

        def run() -> None:
            try:
                self.refresh()
            except Exception:
                log.exception(
                    "indexing stored vectors failed", extra={"collection": self.collection}
                )

        thread = threading.Thread(target=run, name="sift-stored-index", daemon=True)
        thread.start()
        return thread

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        known = {h: self._ids[h] for h in hashes if h in self._ids}
        if not known:
            return {}
        with self._use_store() as store:
            points = store.retrieve(list(dict.fromkeys(known.values())), with_vectors=True)
        by_id = {p.id: p.vector for p in points if p.vector is not None}
        return {h: np.asarray(by_id[i], np.float32) for h, i in known.items() if i in by_id}
