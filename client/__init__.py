"""Client side of qdrant-sift: ``SiftClient``, stores, embedders, ingestion and the CLI.

Importing this package never imports torch; heavy parts load on first use.
"""

from __future__ import annotations

from qdrant_sift.client._client import SiftClient
from qdrant_sift.client._kernel import KERNELS
from qdrant_sift.client._rerank import RerankResult, rerank
from qdrant_sift.client._types import (
    AdaptResult,
    Document,
    ProgressCallback,
    ProgressEvent,
    StageTimings,
)

__all__ = [
    "KERNELS",
    "AdaptResult",
    "Document",
    "ProgressCallback",
    "ProgressEvent",
    "RerankResult",
    "SiftClient",
    "StageTimings",
    "rerank",
]
