"""Create the qdrant-sift collection on a Qdrant server or cluster, idempotently.

Why through ``QdrantStore.create`` and not a raw REST call: the store decides the vector layout
(unnamed or named vector, distance) that recall later reads, so the collection must come from the
same code path. Sharding and replication are cluster-wide choices made once, at creation:
``shard_number`` a multiple of the node count (room to grow), ``replication_factor`` 2 so one
node can fail or be drained for an upgrade without losing a shard.

Runs in the reranker image (``python /app/create_collection.py``) as the compose
``collection-init`` service and the Kubernetes ``qdrant-sift-collection-init`` Job. Waits for
Qdrant to answer first, so it can start together with the cluster. Exit codes: 0 created or
already there with the same dimension, 1 Qdrant unreachable or refused, 2 bad arguments or a
collection of another dimension.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["build_parser", "ensure_collection", "main", "wait_for_store"]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(description="create the qdrant-sift collection (idempotent)")
    p.add_argument("--url", default=env("QDRANT_URL"), help="Qdrant URL (or QDRANT_URL)")
    p.add_argument("--api-key", default=env("QDRANT_API_KEY"), help="or QDRANT_API_KEY")
    p.add_argument("--collection", default=env("QDRANT_SIFT_COLLECTION", "docs"))
    p.add_argument("--dim", type=int, default=int(env("QDRANT_SIFT_DIM", "384")))
    p.add_argument("--distance", default="cosine", choices=["cosine", "dot", "euclid"])
    p.add_argument("--shard-number", type=int, default=int(env("QDRANT_SIFT_SHARDS", "1")))
    p.add_argument(
        "--replication-factor", type=int, default=int(env("QDRANT_SIFT_REPLICATION", "1"))
    )
    p.add_argument("--write-consistency-factor", type=int, default=1)
    p.add_argument("--on-disk-payload", action="store_true", help="keep payloads on disk")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for Qdrant")
    return p


def wait_for_store(store: Any, deadline_s: float, *, sleep: Callable[[float], None] = time.sleep):
    """Poll ``store.exists()`` until Qdrant answers; re-raise its last error at the deadline."""
    from qdrant_sift.errors import StoreUnavailableError

    end = time.monotonic() + deadline_s
    while True:
        try:
            return store.exists()
        except StoreUnavailableError:
            if time.monotonic() >= end:
                raise
            sleep(1.0)


def ensure_collection(
    store: Any,
    *,
    dim: int,
    distance: str = "cosine",
    shard_number: int = 1,
    replication_factor: int = 1,
    write_consistency_factor: int = 1,
    on_disk_payload: bool = False,
) -> bool:
    """Create the collection unless it exists; True if this call created it."""
    from qdrant_sift.errors import ConfigError

    for name, value in (
        ("shard_number", shard_number),
        ("replication_factor", replication_factor),
        ("write_consistency_factor", write_consistency_factor),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if write_consistency_factor > replication_factor:
        raise ConfigError(
            f"write_consistency_factor ({write_consistency_factor}) cannot exceed "
            f"replication_factor ({replication_factor})"
        )
    params: dict[str, Any] = {
        "shard_number": shard_number,
        "replication_factor": replication_factor,
        "write_consistency_factor": write_consistency_factor,
    }
    if on_disk_payload:
        params["on_disk_payload"] = True
    return bool(store.create(dim, distance=distance, exist_ok=True, **params))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from qdrant_sift.client.stores import QdrantStore
    from qdrant_sift.errors import InvalidInputError, StoreError

    if not args.url:
        print("create_collection: --url or QDRANT_URL is required", file=sys.stderr)
        return 2
    try:
        with QdrantStore(args.collection, location=args.url, api_key=args.api_key) as store:
            wait_for_store(store, args.wait)
            created = ensure_collection(
                store,
                dim=args.dim,
                distance=args.distance,
                shard_number=args.shard_number,
                replication_factor=args.replication_factor,
                write_consistency_factor=args.write_consistency_factor,
                on_disk_payload=args.on_disk_payload,
            )
    except InvalidInputError as exc:
        print(f"create_collection: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"create_collection: {exc}", file=sys.stderr)
        return 1
    state = "created" if created else "already exists"
    print(
        f"collection {args.collection!r} {state}: dim={args.dim} shards={args.shard_number} "
        f"replication_factor={args.replication_factor}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
