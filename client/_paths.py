"""Moved to :mod:`qdrant_sift.paths` (shared by the client and the fine-tuner); kept for
``bench/`` scripts that still import it from here."""

from __future__ import annotations

from qdrant_sift.paths import cache_dir, default_edge_path, sift_home

__all__ = ["cache_dir", "default_edge_path", "sift_home"]
