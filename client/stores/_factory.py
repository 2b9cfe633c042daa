"""Open a store by kind, the way the CLI and ``SiftClient`` are configured."""

from __future__ import annotations

import os
from typing import Any

from qdrant_sift.errors import ConfigError

from ._base import VectorStore

__all__ = ["open_store"]


def open_store(
    kind: str = "edge",
    collection: str = "docs",
    *,
    path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> VectorStore:
    """``kind="edge"``: EdgeStore in ``path`` (default ``$QDRANT_SIFT_HOME/edge``);
    ``kind="qdrant"``: QdrantStore at ``url`` / ``QDRANT_URL``, or local mode when ``path`` or
    ``location=":memory:"`` is given."""
    if kind == "edge":
        from qdrant_sift.paths import default_edge_path

        from ._edge import EdgeStore

        if url:
            raise ConfigError("--url is for --store qdrant; the edge store lives in a folder")
        return EdgeStore(path if path is not None else default_edge_path(), collection, **kwargs)
    if kind == "qdrant":
        from ._qdrant import QdrantStore

        return QdrantStore(collection, url=url, path=path, **kwargs)
    raise ConfigError(f"store kind must be 'edge' or 'qdrant', got {kind!r}")
