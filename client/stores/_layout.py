"""How a collection lays out its vectors: the recall vector, and optionally SIFT's kernel.

Two layouts, the same on every backend (Qdrant server, local mode, Qdrant Edge):

* **plain** (every collection written before kernels existed, and any created without
  ``kernel_dim``): one vector, unnamed (or the ``vector_name`` a ``QdrantStore`` was given). It
  serves recall and is SIFT's kernel.
* **with kernel** (created with ``kernel_dim``): two named vectors, the recall vector
  :data:`RECALL_VECTOR` (or the ``QdrantStore``'s ``vector_name``) and the kernel
  :data:`KERNEL_VECTOR` (cosine). A Qdrant server does not take an unnamed vector beside named
  ones, so the recall vector is named too. Every point carries both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, DimensionMismatchError, InvalidInputError, StoreError

from ._points import as_matrix

__all__ = [
    "KERNEL_ID_KEY",
    "KERNEL_VECTOR",
    "RECALL_VECTOR",
    "Layout",
    "check_kernel_dim",
    "check_kernel_id",
    "check_kernel_vectors",
    "no_kernel_error",
    "read_layout",
    "unit_rows",
    "valid_kernel_dim",
]

#: Name of the named vector that holds SIFT's kernel embedding (always cosine).
KERNEL_VECTOR = "sift-kernel"
#: Name of the recall vector in a collection with a kernel (a ``QdrantStore`` may name it itself).
RECALL_VECTOR = "sift-recall"


#: Collection metadata key (Qdrant) of the kernel id: what made the stored kernel vectors.
KERNEL_ID_KEY = "qdrant_sift.kernel"


@dataclass(frozen=True)
class Layout:
    """``using``: the recall vector's name (None: the unnamed one); ``kernel_dim``: None = none;
    ``kernel_id``: what made the stored kernel vectors (an embedder's ``kernel_id``, e.g. the
    pooling and a fingerprint of the model's weights), None when not recorded."""

    dim: int
    distance: str
    using: str | None
    kernel_dim: int | None
    kernel_id: str | None = None

    @staticmethod
    def recall_name(vector_name: str | None, kernel_dim: int | None) -> str | None:
        """The recall vector's name in a collection about to be created."""
        if vector_name == KERNEL_VECTOR:
            raise ConfigError(f"{KERNEL_VECTOR!r} is reserved for SIFT's kernel vector")
        return vector_name or (RECALL_VECTOR if kernel_dim else None)

    def with_vector(self, kernel: bool) -> bool | list[str]:
        """What to ask the engine for: only the vectors needed, never every named one."""
        if self.using is None:
            return True
        return [self.using, KERNEL_VECTOR] if kernel else [self.using]

    def recall_of(self, v: Any) -> Any:
        """The recall vector out of what the engine returned (a list, or a dict of named ones)."""
        return v.get(self.using or "") if isinstance(v, dict) else v

    def kernel_of(self, v: Any, pid: Any) -> Any:
        k = v.get(KERNEL_VECTOR) if isinstance(v, dict) else None
        if k is None:
            raise StoreError(f"point {pid!r} has no {KERNEL_VECTOR!r} vector; re-ingest it")
        return k

    def point_vectors(self, vectors: np.ndarray, kernels: np.ndarray | None) -> list[Any]:
        """One engine vector per point: a list, or ``{recall: …, kernel: …}``."""
        rows = vectors.tolist()
        if kernels is None:
            return rows if self.using is None else [{self.using: r} for r in rows]
        name = self.using or ""
        return [{name: r, KERNEL_VECTOR: k} for r, k in zip(rows, kernels.tolist(), strict=True)]


def read_layout(
    collection: str,
    vectors: Mapping[str, tuple[int, str]],
    vector_name: str | None,
    kernel_id: Any = None,
) -> Layout:
    """The layout of a collection from its vector config, ``{name: (size, distance)}``
    (the unnamed vector under ``""``), and the kernel id it recorded (kept only when it is a
    string and the collection has kernel vectors)."""
    kernel = vectors.get(KERNEL_VECTOR)
    if vector_name is not None:
        if vector_name == KERNEL_VECTOR:
            raise ConfigError(f"{KERNEL_VECTOR!r} is SIFT's kernel, not a recall vector")
        if set(vectors) == {""}:
            raise ConfigError(f"collection {collection!r} has one unnamed vector")
        if vector_name not in vectors:
            raise ConfigError(
                f"collection {collection!r} has no vector {vector_name!r} (has {sorted(vectors)})"
            )
        using: str | None = vector_name
    elif "" in vectors:
        using = None
    elif RECALL_VECTOR in vectors:
        using = RECALL_VECTOR
    else:
        raise ConfigError(
            f"collection {collection!r} has named vectors {sorted(vectors)}; pass vector_name="
        )
    size, distance = vectors[using or ""]
    kernel_dim = None if kernel is None else int(kernel[0])
    kid = kernel_id if isinstance(kernel_id, str) and kernel_dim is not None else None
    return Layout(int(size), distance.lower(), using, kernel_dim, kid)


def _fix(collection: str) -> str:
    return (
        f"drop and re-create {collection!r} (qdrant-sift ingest … --kernel model-mean "
        "--recreate, or ingest(…, kernel_embedder=…) after store.drop())"
    )


def check_kernel_dim(collection: str, have: int | None, want: int | None) -> None:
    """An existing collection's kernel must be the one asked for (``create(exist_ok=True)``)."""
    if have == want:
        return
    if want is None:
        raise ConfigError(
            f"collection {collection!r} holds {have}-d kernel vectors and every point needs "
            f"one: pass kernel_dim={have} (ingest: kernel_embedder= / --kernel), or "
            + _fix(collection)
        )
    if have is None:
        raise ConfigError(
            f"collection {collection!r} holds no kernel vectors; to add them, {_fix(collection)}"
        )
    raise DimensionMismatchError(
        f"collection {collection!r} holds {have}-d kernel vectors, asked for {want}-d"
    )


def check_kernel_id(collection: str, have: str | None, want: str | None) -> None:
    """Kernel vectors of one kernel only: a recorded kernel id must be the one asked for (either
    unknown: nothing to compare)."""
    if have is None or want is None or have == want:
        return
    raise ConfigError(
        f"collection {collection!r} holds kernel vectors made by {have!r}, this kernel is "
        f"{want!r}: SIFT would compare vectors of two embeddings. Use the kernel the "
        f"collection was ingested with, or {_fix(collection)}"
    )


def check_kernel_vectors(
    collection: str, kernel_dim: int | None, kernel_vectors: Any, n: int
) -> np.ndarray | None:
    """Validated (n, kernel_dim) float32 kernel rows for an upsert, or None (plain layout)."""
    if kernel_vectors is None:
        if kernel_dim is not None:
            raise ConfigError(
                f"collection {collection!r} holds a {kernel_dim}-d kernel vector per point; pass "
                "kernel_vectors= (ingest: kernel_embedder= / --kernel)"
            )
        return None
    kvecs = as_matrix(kernel_vectors, "kernel vectors")
    if kvecs.shape[0] != n:
        raise InvalidInputError(f"{kvecs.shape[0]} kernel vectors for {n} ids")
    if kernel_dim is None:
        raise ConfigError(
            f"collection {collection!r} holds no kernel vectors; to store them, {_fix(collection)}"
        )
    if kvecs.shape[1] != kernel_dim:
        raise DimensionMismatchError(
            f"kernel vectors have dimension {kvecs.shape[1]}, collection {collection!r} has "
            f"{kernel_dim}"
        )
    norms = np.linalg.norm(kvecs, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise InvalidInputError("a zero kernel vector cannot be stored (the kernel is cosine)")
    # stored as unit rows everywhere (qdrant-client local mode reloads them as given)
    return np.asarray(kvecs / norms, dtype=np.float32)


def unit_rows(kernels: np.ndarray | None) -> np.ndarray | None:
    """Kernel rows as unit vectors, whatever the backend returned (cosine on every backend)."""
    if kernels is None:
        return None
    norms = np.linalg.norm(kernels, axis=1, keepdims=True)
    return np.ascontiguousarray(kernels / np.maximum(norms, 1e-12), dtype=np.float32)


def valid_kernel_dim(kernel_dim: Any) -> int | None:
    if kernel_dim is None:
        return None
    if (
        not isinstance(kernel_dim, (int, np.integer))
        or isinstance(kernel_dim, bool)
        or kernel_dim <= 0
    ):
        raise InvalidInputError(f"kernel_dim must be a positive int or None, got {kernel_dim!r}")
    return int(kernel_dim)


def no_kernel_error(collection: str) -> ConfigError:
    """Kernel vectors asked of a collection that has none."""
    return ConfigError(
        f"collection {collection!r} holds no kernel vectors; {_fix(collection)}, or let "
        "SiftClient compute the kernel from the texts (kernel_embedder= without stored ones)"
    )
