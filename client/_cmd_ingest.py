"""``qdrant-sift ingest PATH... --collection C``: files and folders into a collection."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qdrant_sift.client._cmd_common import add_store_options, store_from_args
from qdrant_sift.client._kernel import KERNELS

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ingest",
        help="chunk, embed and store files (.txt .md .rst .py .jsonl, folders)",
        description="Read files and folders, chunk them by the language model's tokens, embed "
        "them and upsert into a Qdrant collection. Re-running is idempotent and resumes an "
        "interrupted run.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    add_store_options(parser)
    parser.add_argument("--chunk-tokens", type=int, default=512, help="tokens per chunk (512)")
    parser.add_argument(
        "--overlap", type=int, default=None, help="overlapping tokens (min(64, chunk tokens / 8))"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="chunks per embed/upsert (64)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="chunking tokenizer: HF id/folder or 'regex' (default: SmolLM2's)",
    )
    parser.add_argument(
        "--embedder", default=None, help="HF id/folder of the embedder (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--device", default=None, help="embedder device (default: cuda if any)")
    parser.add_argument(
        "--kernel",
        choices=KERNELS,
        default=None,
        help="also store SIFT's kernel as a second named vector: the default language model's "
        "last hidden layer, mean- or last-token-pooled (loads the model; a new collection, or "
        "--recreate)",
    )
    parser.add_argument(
        "--optimize", action="store_true", help="build the HNSW index afterwards (Edge)"
    )
    parser.add_argument(
        "--recreate", action="store_true", help="drop the collection first (start from scratch)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qdrant_sift.client._threads import apply_thread_policy

    apply_thread_policy()  # before torch is imported: OMP_WAIT_POLICY=PASSIVE
    from qdrant_sift.client.embed import HFEmbedder, default_embedder
    from qdrant_sift.client.ingest import ingest

    embedder = (
        HFEmbedder(args.embedder, device=args.device)
        if args.embedder
        else default_embedder(args.device)
    )
    with store_from_args(args) as store:
        if args.recreate:
            store.drop()
        kernel_embedder = _kernel_embedder(args, store)
        report = ingest(
            args.paths,
            store,
            embedder,
            tokenizer=args.tokenizer,
            chunk_tokens=args.chunk_tokens,
            overlap=args.overlap if args.overlap is not None else min(64, args.chunk_tokens // 8),
            batch_size=args.batch_size,
            progress=not args.no_progress,
            kernel_embedder=kernel_embedder,
        )
        print(report.summary())
        if args.optimize:
            print("building the HNSW index …", file=sys.stderr)
            store.optimize()
        print(f"collection {args.collection!r}: {store.count()} points")
    return 0 if report.files_read or not report.skipped else 1


def _kernel_embedder(args: argparse.Namespace, store: Any) -> Any:
    """The ``--kernel`` ModelEmbedder, after checking the collection can take it (before the
    model loads): a collection keeps its layout, kernel or not, until ``--recreate``."""
    if store.exists() and (store.kernel_dim is not None) != bool(args.kernel):
        from qdrant_sift.client.stores._layout import check_kernel_dim

        check_kernel_dim(store.collection, store.kernel_dim, 1 if args.kernel else None)
    if not args.kernel:
        return None
    from qdrant_sift.client._kernel import model_kernel
    from qdrant_sift.finetune import load_model

    model, tokenizer = load_model(None, device=args.device)
    return model_kernel(args.kernel, model, tokenizer, max_tokens=max(512, args.chunk_tokens))
