"""qdrant-sift: test-time active fine-tuning of language models on top of Qdrant.

Subpackages load lazily so that ``import qdrant_sift`` (and ``qdrant_sift.client``) never imports
torch: ``qdrant_sift.reranker`` (SIFT selection, gRPC service), ``qdrant_sift.finetune`` (LoRA
test-time fine-tuning) and ``qdrant_sift.client`` (stores, ``SiftClient``, CLI).
"""

from __future__ import annotations

from qdrant_sift.errors import *  # noqa: F403
from qdrant_sift.errors import __all__ as _error_names

__version__ = "0.1.0"

__all__ = ["__version__", *_error_names]
