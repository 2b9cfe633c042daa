"""SIFT selection (in-process, CPU or CUDA) and the gRPC reranker service."""

from __future__ import annotations

__all__: list[str] = []
