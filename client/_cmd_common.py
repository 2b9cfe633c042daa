"""Options shared by the CLI subcommands that talk to a collection."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_selection_options", "add_store_options", "client_from_args"]


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--collection", default="docs", help="Qdrant collection (default: docs)")
    group.add_argument(
        "--store",
        choices=("edge", "qdrant"),
        default=None,
        help="embedded Qdrant Edge (default) or a Qdrant server (default when QDRANT_URL is set)",
    )
    group.add_argument("--url", default=None, help="Qdrant server URL (else $QDRANT_URL)")
    group.add_argument("--path", default=None, help="Qdrant Edge folder (else the default cache)")


def add_selection_options(parser: argparse.ArgumentParser, *, n_default: int) -> None:
    group = parser.add_argument_group("selection")
    group.add_argument("--n", type=int, default=n_default, help=f"picks (default {n_default})")
    group.add_argument("--k", type=int, default=200, help="candidates recalled (default 200)")
    group.add_argument("--lam", type=float, default=0.01, help="SIFT noise λ (default 0.01)")
    group.add_argument("--alpha", type=float, default=None, help="adaptive stopping α")
    group.add_argument(
        "--strategy",
        choices=("sift", "nearest", "mmr", "random"),
        default="sift",
        help="selection strategy (default sift)",
    )
    group.add_argument(
        "--reranker", default=None, help="grpc://host:port of a reranker service (else in-process)"
    )


def client_from_args(args: argparse.Namespace, *, model: Any = None) -> Any:
    """A ``SiftClient`` configured from the shared options (parts still load lazily)."""
    import os

    from qdrant_sift.client import SiftClient

    store = None
    url = args.url or os.environ.get("QDRANT_URL")
    if args.store == "qdrant" or (args.store is None and url):
        from qdrant_sift.client.stores import QdrantStore

        store = QdrantStore(args.collection, url=url or "http://localhost:6333")
    elif args.store == "edge" or args.path:
        from pathlib import Path

        from qdrant_sift.client._paths import default_edge_path
        from qdrant_sift.client.stores import EdgeStore

        store = EdgeStore(Path(args.path) if args.path else default_edge_path(), args.collection)
    reranker = None
    if getattr(args, "reranker", None):
        from qdrant_sift.reranker import RemoteReranker

        reranker = RemoteReranker(args.reranker)
    return SiftClient(
        store=store, reranker=reranker, model=model, collection=args.collection, close_parts=True
    )
