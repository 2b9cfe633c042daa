"""Options shared by the CLI subcommands that talk to a collection."""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_sift.client._kernel import DEFAULT_KERNEL, KERNEL_CHOICES
from qdrant_sift.options import DEFAULTS, STRATEGIES, SelectOptions

__all__ = [
    "add_kernel_option",
    "add_selection_options",
    "add_store_options",
    "client_from_args",
    "collection_arg",
    "store_from_args",
]


def collection_arg(value: str) -> str:
    """``--collection``: a valid collection name, checked before anything loads (exit 2)."""
    from qdrant_sift.client.stores import validate_collection_name
    from qdrant_sift.errors import InvalidInputError

    try:
        return validate_collection_name(value)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument(
        "--collection",
        type=collection_arg,
        default="docs",
        help="Qdrant collection (default: docs)",
    )
    group.add_argument(
        "--store",
        choices=("edge", "qdrant"),
        default=None,
        help="embedded Qdrant Edge (default) or a Qdrant server (default when QDRANT_URL is set)",
    )
    group.add_argument("--url", default=None, help="Qdrant server URL (else $QDRANT_URL)")
    group.add_argument("--api-key", default=None, help="Qdrant API key (else $QDRANT_API_KEY)")
    group.add_argument(
        "--path",
        default=None,
        help="Edge folder, or qdrant-client local folder with --store qdrant",
    )


def add_selection_options(parser: argparse.ArgumentParser, *, n_default: int) -> None:
    group = parser.add_argument_group("selection")
    group.add_argument("--n", type=int, default=n_default, help=f"picks (default {n_default})")
    group.add_argument("--k", type=int, default=200, help="candidates recalled (default 200)")
    group.add_argument(
        "--lam",
        type=float,
        default=DEFAULTS.lam,
        help=f"{SelectOptions.help('lam')} (default {DEFAULTS.lam:g})",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=DEFAULTS.alpha,
        help=f"{SelectOptions.help('alpha')} (default off)",
    )
    group.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULTS.strategy,
        help=f"{SelectOptions.help('strategy')} (default {DEFAULTS.strategy})",
    )
    group.add_argument(
        "--reranker", default=None, help="grpc://host:port of a reranker service (else in-process)"
    )


def add_kernel_option(parser: argparse.ArgumentParser) -> None:
    """``--kernel``: SIFT's kernel (None when not given: ``SiftClient``'s default, model-mean,
    which falls back to the recall vectors where it cannot apply)."""
    parser.add_argument(
        "--kernel",
        choices=KERNEL_CHOICES,
        default=None,
        help="SIFT's kernel: the language model's last hidden layer, mean- or last-token-pooled "
        "(read from the collection when ingested with --kernel, else computed from the texts), "
        f"or the recall vectors (default {DEFAULT_KERNEL})",
    )


def store_from_args(args: argparse.Namespace) -> Any:
    """The store the options name: a server when a URL is given, else the Edge folder."""
    import os

    from qdrant_sift.client.stores import open_store

    url = args.url or os.environ.get("QDRANT_URL")
    kind = args.store or ("qdrant" if url else "edge")
    extra = {"api_key": args.api_key} if kind == "qdrant" and args.api_key else {}
    return open_store(
        kind,
        args.collection,
        path=args.path,
        url=url if kind == "qdrant" and not args.path else None,
        **extra,
    )


def client_from_args(args: argparse.Namespace, *, model: Any = None) -> Any:
    """A ``SiftClient`` on :func:`store_from_args` (the other parts still load lazily)."""
    from qdrant_sift.client import SiftClient

    store = store_from_args(args)
    reranker = None
    if getattr(args, "reranker", None):
        from qdrant_sift.reranker import RemoteReranker

        reranker = RemoteReranker(args.reranker)
    return SiftClient(
        store=store,
        reranker=reranker,
        model=model,
        collection=args.collection,
        close_parts=True,
        kernel=getattr(args, "kernel", None),
    )
