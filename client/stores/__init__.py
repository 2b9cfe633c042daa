"""Vector stores: Qdrant (server, cluster, local mode) and embedded Qdrant Edge, one interface.

``recall`` returns the K nearest candidates *with their vectors* (:class:`Candidates`), which is
what SIFT selects from. Filters are written once (:class:`Filter`, :class:`Match`,
:class:`Range`, or a plain dict) and translated per backend. A collection may also hold SIFT's
kernel as a second named vector (:data:`KERNEL_VECTOR`; ``create(kernel_dim=…)``,
``recall(with_kernel=True)``). ``recall(with_payload=False)`` reads vectors without payloads,
for SIFT search: read the payloads of the picks alone afterwards (``retrieve(ids,
with_vectors=False)``).
"""

from __future__ import annotations

from ._base import DISTANCES, PointId, VectorStore
from ._edge import EdgeStore
from ._ef import HNSW_EF_FACTOR, HNSW_EF_MIN, OPPOSITE_EF_FACTOR, default_ef, query_ef
from ._factory import open_store
from ._filters import Filter, Match, Range, as_filter
from ._hits import OPPOSITE_PROBE
from ._layout import KERNEL_VECTOR, RECALL_VECTOR
from ._names import MAX_COLLECTION_NAME, shard_path, validate_collection_name
from ._points import Candidates, StoredPoint
from ._qdrant import QdrantStore

__all__ = [
    "DISTANCES",
    "HNSW_EF_FACTOR",
    "HNSW_EF_MIN",
    "KERNEL_VECTOR",
    "MAX_COLLECTION_NAME",
    "OPPOSITE_EF_FACTOR",
    "OPPOSITE_PROBE",
    "RECALL_VECTOR",
    "Candidates",
    "EdgeStore",
    "Filter",
    "Match",
    "PointId",
    "QdrantStore",
    "Range",
    "StoredPoint",
    "VectorStore",
    "as_filter",
    "default_ef",
    "open_store",
    "query_ef",
    "shard_path",
    "validate_collection_name",
]
