"""The ``qdrant-sift`` command line.

Each subcommand lives in its own small module exposing ``register(subparsers)``; it sets
``func`` on its parser and imports heavy dependencies (torch, transformers) only inside ``func``,
so ``qdrant-sift --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from qdrant_sift import QdrantSiftError, __version__

from ._cmd_common import add_store_options, store_from_args

#: ``add_store_options``/``store_from_args`` are public so other packages' subcommands (eval)
#: take the same store options as ingest/search/generate.
__all__ = ["add_store_options", "build_parser", "main", "store_from_args"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "qdrant_sift.client._cmd_ingest",
    "qdrant_sift.client._cmd_generate",
    "qdrant_sift.reranker._cmd_serve",
    "qdrant_sift.eval._cmd",
    "qdrant_sift.client._cmd_demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdrant-sift",
        description="Test-time active fine-tuning of language models on Qdrant with SIFT.",
    )
    parser.add_argument("--version", action="version", version=f"qdrant-sift {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QdrantSiftError as exc:
        print(f"qdrant-sift: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qdrant-sift: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
