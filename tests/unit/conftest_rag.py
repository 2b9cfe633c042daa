"""A deterministic, model-free embedder for the RAG adapter tests (no downloads, no torch).

Hashing bag of words: each lower-cased token adds ±1 to one of ``dim`` buckets chosen by a stable
hash, then the vector is L2-normalised. Texts that share words are close, disjoint texts are
(nearly) orthogonal, and identical texts are identical — enough structure for SIFT's
non-redundancy to show against nearest-neighbour ranking.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["CORPUS", "QUERY", "HashingEmbedder"]

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Implements the ``Embedder`` protocol (``dim``, ``embed_documents``, ``embed_query``)."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.document_calls = 0
        self.query_calls = 0

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, np.float64)
        for token in _TOKEN.findall(text.lower()):
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = np.linalg.norm(vec)
        if norm == 0:
            vec[0] = 1.0
            norm = 1.0
        return (vec / norm).astype(np.float32)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.document_calls += 1
        return [self._one(t).tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.query_calls += 1
        return self._one(text).tolist()


#: Three near-copies about one facet of the query and one document each about two other facets.
#: Nearest-neighbour ranking returns the copies first; SIFT covers the facets.
CORPUS: list[str] = [
    "qdrant stores vectors in collections with payloads",
    "qdrant stores vectors in collections with payload",
    "qdrant stores the vectors in collections with payloads",
    "sift selects informative diverse examples for test time fine tuning",
    "lora adapters reset after every prompt during fine tuning",
    "bananas are yellow fruit rich in potassium",
    "the moon orbits the earth every month",
    "volcanoes erupt molten rock called lava",
]
QUERY = "qdrant vectors sift examples lora adapters"
