"""Generated gRPC code for the ``qdrant_sift.v1`` proto package (see ``scripts/gen_proto.sh``)."""

from __future__ import annotations

__all__ = ["reranker_pb2", "reranker_pb2_grpc"]
