"""qdrant-sift: test-time active fine-tuning of language models on top of Qdrant.

Subpackages load lazily so that ``import qdrant_sift`` (and ``qdrant_sift.client``) never imports
torch: ``qdrant_sift.reranker`` (SIFT selection, gRPC service), ``qdrant_sift.finetune`` (LoRA
test-time fine-tuning) and ``qdrant_sift.client`` (stores, ``SiftClient``, CLI).

Shared by all of them: the error tree (:mod:`qdrant_sift.errors`, re-exported here), the selection
options (:class:`SelectOptions`, :data:`DEFAULTS`, :data:`RERANK_DEFAULTS` from
:mod:`qdrant_sift.options`), the array rule (:mod:`qdrant_sift.arrays`), file locations
(:mod:`qdrant_sift.paths`) and the CPUs this process may use (:mod:`qdrant_sift.cpus`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes
from qdrant_sift.errors import *  # noqa: F403
from qdrant_sift.errors import __all__ as _error_names

if TYPE_CHECKING:
    from qdrant_sift.options import DEFAULTS, RERANK_DEFAULTS, SelectOptions

__version__ = "0.1.0"

__all__ = ["DEFAULTS", "RERANK_DEFAULTS", "SelectOptions", "__version__", *_error_names]

__getattr__, __dir__ = lazy_attributes(
    __name__, globals(), {"qdrant_sift.options": ["DEFAULTS", "RERANK_DEFAULTS", "SelectOptions"]}
)
