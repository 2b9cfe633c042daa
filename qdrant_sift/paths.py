"""Where qdrant-sift keeps its files by default: ``$QDRANT_SIFT_HOME`` or ~/.cache/qdrant-sift."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "default_edge_path", "sift_home"]


def sift_home() -> Path:
    """Root folder for the embedded store and caches (not created here)."""
    env = os.environ.get("QDRANT_SIFT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qdrant-sift"


def default_edge_path() -> Path:
    """Folder of the embedded Qdrant Edge store used when no path is given."""
    return sift_home() / "edge"


def cache_dir(name: str) -> Path:
    """A named cache folder (converted tokenizers, models), created on demand."""
    path = sift_home() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
