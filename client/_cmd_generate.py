"""``qdrant-sift search`` and ``qdrant-sift generate``."""

from __future__ import annotations

import argparse
import json
import sys

from qdrant_sift.client._cmd_common import (
    add_kernel_option,
    add_selection_options,
    add_store_options,
    client_from_args,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    search = sub.add_parser(
        "search",
        help="recall and select chunks for a prompt (no fine-tuning)",
        description="Recall k candidates from Qdrant and print the n that the strategy picks, "
        "with the model's uncertainty after each pick.",
    )
    search.add_argument("prompt")
    add_store_options(search)
    add_selection_options(search, n_default=10)
    add_kernel_option(search)
    search.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    search.set_defaults(func=run_search)

    gen = sub.add_parser(
        "generate",
        help="adapt the model to a prompt with SIFT, then answer",
        description="Recall, select with SIFT, fine-tune a LoRA adapter one step per pick, "
        "answer, and reset the adapter.",
    )
    gen.add_argument("prompt")
    add_store_options(gen)
    add_selection_options(gen, n_default=20)
    add_kernel_option(gen)
    gen.add_argument("--model", default=None, help="HF id or local path (default: SmolLM2-135M)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--compare-base", action="store_true", help="also answer with the base model")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=run_generate)


def run_search(args: argparse.Namespace) -> int:
    from qdrant_sift.client._threads import apply_thread_policy

    apply_thread_policy()  # before torch is imported: OMP_WAIT_POLICY=PASSIVE
    from qdrant_sift.client._report import format_documents

    with client_from_args(args) as client:
        docs = client.search(
            args.prompt, n=args.n, k=args.k, strategy=args.strategy, lam=args.lam, alpha=args.alpha
        )
    if args.json:
        for doc in docs:
            print(
                json.dumps(
                    {
                        "id": str(doc.id),
                        "rank": doc.rank,
                        "score": doc.score,
                        "uncertainty": doc.uncertainty,
                        "text": doc.text,
                        "metadata": doc.metadata,
                    },
                    default=str,
                )
            )
    else:
        print(format_documents(docs))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from qdrant_sift.client._threads import apply_thread_policy

    apply_thread_policy()  # before torch is imported: OMP_WAIT_POLICY=PASSIVE
    from qdrant_sift.client._report import adapt_and_report

    with client_from_args(args, model=args.model) as client:
        report = adapt_and_report(
            client,
            args.prompt,
            compare_base=args.compare_base,
            show_progress=not args.no_progress and sys.stderr.isatty(),
            max_new_tokens=args.max_new_tokens,
            k=args.k,
            n=args.n,
            lam=args.lam,
            alpha=args.alpha,
            strategy=args.strategy,
        )
    print(report)
    return 0
