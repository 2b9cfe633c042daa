"""``qdrant-sift demo``: the whole product, offline, on real text every Python install ships.

The corpus is a set of Python standard-library modules (their source and docstrings), ingested
once into an embedded Qdrant Edge collection; re-runs reuse it. The prompt asks about one of
those modules, so the picks can actually help the model.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdrant_sift.client._cmd_common import add_kernel_option, collection_arg

__all__ = ["DEMO_MODULES", "DEMO_PROMPT", "demo_sources", "register"]

#: Standard-library modules whose source makes the demo corpus (several topics, ~0.7 MB of text).
DEMO_MODULES: tuple[str, ...] = (
    "heapq",
    "bisect",
    "textwrap",
    "fractions",
    "statistics",
    "difflib",
    "shlex",
    "colorsys",
    "functools",
    "contextlib",
    "dataclasses",
    "enum",
    "json/__init__",
    "json/decoder",
    "json/encoder",
    "pathlib",
    "string",
    "random",
    "csv",
    "calendar",
    "argparse",
)
DEMO_PROMPT = (
    "In Python's heapq module, what does heapq.merge do with several sorted inputs, "
    "and how do the key and reverse arguments change it?"
)


def demo_sources(modules: Sequence[str] = DEMO_MODULES) -> list[Path]:
    """The stdlib files of ``modules`` that exist on this interpreter."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p for m in modules if (p := stdlib / f"{m}.py").is_file()]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="offline end-to-end demo on Python's standard library (embedded Qdrant Edge)",
        description="Ingest Python standard-library modules into an embedded Qdrant Edge "
        "collection (once), then adapt SmolLM2-135M to a prompt with SIFT and compare its "
        "answer with the base model's.",
    )
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--path", default=None, help="Qdrant Edge folder (else the default cache)")
    parser.add_argument("--collection", type=collection_arg, default="demo-stdlib")
    parser.add_argument(
        "--modules",
        type=lambda text: tuple(m for m in text.split(",") if m),
        default=DEMO_MODULES,
        help="comma-separated stdlib modules for the corpus (default: 21 modules)",
    )
    parser.add_argument("--n", type=int, default=20, help="SIFT picks = LoRA steps (default 20)")
    parser.add_argument("--k", type=int, default=200, help="candidates recalled (default 200)")
    parser.add_argument("--alpha", type=float, default=None, help="adaptive stopping α")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model", default=None, help="HF id or local path (default: SmolLM2)")
    add_kernel_option(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qdrant_sift.client._threads import apply_thread_policy

    apply_thread_policy()  # before torch is imported: OMP_WAIT_POLICY=PASSIVE
    from qdrant_sift.client import SiftClient
    from qdrant_sift.client._report import adapt_and_report
    from qdrant_sift.client.embed import default_embedder
    from qdrant_sift.client.ingest import ingest
    from qdrant_sift.client.stores import EdgeStore
    from qdrant_sift.errors import LegacyIdsError
    from qdrant_sift.paths import default_edge_path

    show = not args.no_progress
    folder = Path(args.path) if args.path else default_edge_path()
    print(f"qdrant-sift demo — embedded Qdrant Edge at {folder}, collection {args.collection!r}")
    embedder = default_embedder()
    started = time.perf_counter()
    with (
        EdgeStore(folder, args.collection) as store,
        SiftClient(store=store, embedder=embedder, model=args.model, kernel=args.kernel) as client,
    ):
        sources = demo_sources(args.modules)

        def sync() -> Any:
            return ingest(sources, store, embedder, chunk_tokens=args.chunk_tokens, progress=show,
                          kernel_embedder=_ingest_kernel(client, store, args.kernel))  # fmt: skip

        try:
            report = sync()
        except LegacyIdsError:  # cached by an older version: the demo's own, rebuild it
            print("rebuilding the demo collection (old chunk-id scheme) …", file=sys.stderr)
            store.drop()
            report = sync()
        print(
            f"corpus: {len(sources)} standard-library modules → {store.count()} chunks "
            f"({report.upserted} new) in {time.perf_counter() - started:.1f} s"
        )
        print(f"\nprompt: {args.prompt}\n")
        print("loading the language model …", file=sys.stderr)
        answer = adapt_and_report(
            client,
            args.prompt,
            compare_base=True,
            show_progress=show,
            max_new_tokens=args.max_new_tokens,
            n=args.n,
            k=args.k,
            alpha=args.alpha,
        )
    print(answer)
    print(f"\nwall time: {time.perf_counter() - started:.1f} s")
    return 0


def _ingest_kernel(client: Any, store: Any, kernel: str | None) -> Any:
    """The kernel embedder to ingest with: the model kernel for a new collection (unless
    ``--kernel recall``) and for one that stores kernel vectors (every point needs one); None for
    an existing collection without them, where SIFT computes the kernel from the texts."""
    from qdrant_sift.client._kernel import DEFAULT_KERNEL, KERNELS, model_kernel

    if store.exists() and store.kernel_dim is None:
        return None
    if not store.exists() and kernel == "recall":
        return None
    print("loading the language model (SIFT's kernel) …", file=sys.stderr)
    tuner = client.tuner  # the client's own model: stored and computed kernels agree
    name = kernel if kernel in KERNELS else DEFAULT_KERNEL
    return model_kernel(name, tuner.model, tuner.tokenizer)
