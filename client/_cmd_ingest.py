"""``qdrant-sift ingest PATH... --collection C``: files and folders into a collection, kept in
sync with them; ``qdrant-sift migrate-ids``: re-key a collection of the old id scheme."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qdrant_sift.client._cmd_common import add_store_options, store_from_args
from qdrant_sift.client._kernel import KERNELS

__all__ = ["register", "run", "run_migrate"]

#: The cleanup modes (kept here too, so --help imports nothing heavy).
CLEANUP_MODES = ("none", "incremental", "full")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "ingest",
        help="chunk, embed and store files and folders, and keep the collection in sync",
        description="Read files and folders (any text file, HTML, PDF, JSONL, source code), "
        "chunk them by the language model's tokens, embed them and upsert into a Qdrant "
        "collection. Sources are identified by their path relative to the folder given, so a "
        "moved corpus keeps its ids. Re-running is a no-op (unchanged files are not embedded "
        "again), replaces changed files, and resumes an interrupted run.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    add_store_options(parser)
    sync = parser.add_argument_group("sync")
    sync.add_argument(
        "--cleanup",
        choices=CLEANUP_MODES,
        default="incremental",
        help="incremental (default): replace the chunks of changed files; full: also delete "
        "files under the folders given that no longer exist; none: only add",
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="print what would be added/changed/deleted"
    )
    sync.add_argument("--json", action="store_true", help="print the report as JSON")
    sync.add_argument(
        "--source-id",
        default=None,
        help="id of the one file given, or prefix of the ids under a folder (keeps two corpora "
        "in one collection apart)",
    )
    sync.add_argument(
        "--include", action="append", default=[], metavar="GLOB",
        help="only files whose relative path or name matches (repeatable)",
    )  # fmt: skip
    sync.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB",
        help="leave out files whose relative path or name matches (repeatable)",
    )  # fmt: skip
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
    migrate = sub.add_parser(
        "migrate-ids",
        help="re-key a collection written with the old id scheme (vectors kept)",
        description="Collections written before stable source ids derive chunk ids from "
        "absolute paths; ingest refuses to mix them with new ones. This converts them in place, "
        "keeping every vector: give the folder(s) they were ingested from, then run ingest as "
        "usual (it rewrites payloads and embeds only what changed).",
    )
    migrate.add_argument(
        "--root", action="append", required=True, metavar="FOLDER",
        help="folder the collection was ingested from (repeatable)",
    )  # fmt: skip
    migrate.add_argument("--dry-run", action="store_true", help="count, write nothing")
    add_store_options(migrate)
    migrate.set_defaults(func=run_migrate)


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
        if args.recreate and args.dry_run:
            print("dry run: --recreate not applied (the collection is kept)", file=sys.stderr)
        elif args.recreate:
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
            progress=not args.no_progress and not args.json,
            kernel_embedder=kernel_embedder,
            source_id=args.source_id,
            cleanup=args.cleanup,
            include=args.include,
            exclude=args.exclude,
            dry_run=args.dry_run,
        )
        if args.optimize and not args.dry_run:
            print("building the HNSW index …", file=sys.stderr)
            store.optimize()
        points = store.count() if store.exists() else 0
        if args.json:
            print(json.dumps({**report.to_dict(), "collection": args.collection, "points": points}))
        else:
            print(report.summary())
            print(f"collection {args.collection!r}: {points} points")
    return 0 if report.files_read or not report.skipped else 1


def run_migrate(args: argparse.Namespace) -> int:
    from qdrant_sift.client.ingest import migrate_ids

    with store_from_args(args) as store:
        report = migrate_ids(store, args.root, dry_run=args.dry_run)
        print(("dry run: " if args.dry_run else "") + report.summary())
    return 0


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
