"""``qdrant-sift ingest PATH... --collection C``: files and folders into a collection."""

from __future__ import annotations

import argparse
import sys

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
    parser.add_argument("--collection", default="docs", help="collection (default: docs)")
    parser.add_argument(
        "--store",
        choices=("edge", "qdrant"),
        default=None,
        help="embedded Qdrant Edge (default) or a Qdrant server (default when --url/QDRANT_URL)",
    )
    parser.add_argument("--url", default=None, help="Qdrant server URL (else $QDRANT_URL)")
    parser.add_argument("--api-key", default=None, help="Qdrant API key (else $QDRANT_API_KEY)")
    parser.add_argument(
        "--path",
        default=None,
        help="Edge folder, or qdrant-client local folder with --store qdrant",
    )
    parser.add_argument("--chunk-tokens", type=int, default=512, help="tokens per chunk (512)")
    parser.add_argument("--overlap", type=int, default=64, help="overlapping tokens (64)")
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
        "--optimize", action="store_true", help="build the HNSW index afterwards (Edge)"
    )
    parser.add_argument(
        "--recreate", action="store_true", help="drop the collection first (start from scratch)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from qdrant_sift.client.embed import HFEmbedder, default_embedder
    from qdrant_sift.client.ingest import ingest
    from qdrant_sift.client.stores import open_store

    url = args.url or os.environ.get("QDRANT_URL")
    kind = args.store or ("qdrant" if url else "edge")
    extra = {"api_key": args.api_key} if kind == "qdrant" and args.api_key else {}
    embedder = (
        HFEmbedder(args.embedder, device=args.device)
        if args.embedder
        else default_embedder(args.device)
    )
    with open_store(
        kind,
        args.collection,
        path=args.path,
        url=url if kind == "qdrant" and not args.path else None,
        **extra,
    ) as store:
        if args.recreate:
            store.drop()
        report = ingest(
            args.paths,
            store,
            embedder,
            tokenizer=args.tokenizer,
            chunk_tokens=args.chunk_tokens,
            overlap=args.overlap,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        print(report.summary())
        if args.optimize:
            print("building the HNSW index …", file=sys.stderr)
            store.optimize()
        print(f"collection {args.collection!r}: {store.count()} points")
    return 0 if report.files_read or not report.skipped else 1
