"""``qdrant-sift eval``: bits per byte before/after test-time fine-tuning, per selection strategy.

torch and transformers are imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qdrant_sift.client.cli import add_store_options

__all__ = ["register", "run"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _arms(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(";") if x.strip())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="does fine-tuning on SIFT's picks lower bits per byte more than nearest neighbours?",
        description="Hold out prompts from a corpus, recall K candidates per prompt, let each "
        "strategy pick N of them, take one LoRA step per pick and measure the prompt's bits per "
        "byte at every N. Resumable: rerun with the same --out to continue a killed run. Writes "
        "results.jsonl/csv, summary.json, table.md and PNG plots.",
    )
    p.add_argument(
        "--preset",
        choices=("default", "sweep", "confirm", "quick"),
        default=None,
        help="default: 18 prompts, N<=20; sweep: the 12 development prompts, many arms; "
        "confirm: the 48 held-out confirmatory prompts, N=10,20,50; quick: tiny model (CI)",
    )
    p.add_argument("--quick", action="store_true", help="same as --preset quick")
    p.add_argument("--out", default="eval-results", help="results folder (default: %(default)s)")
    p.add_argument(
        "--corpus",
        action="append",
        default=None,
        metavar="PATH",
        help="a folder (domain = first sub-folder) or JSONL file (text, domain); repeatable. "
        "Default: offline real text of this machine in several domains",
    )
    p.add_argument("--domains", type=_names, default=None, help="default-corpus domains to use")
    p.add_argument(
        "--arms",
        type=_arms,
        default=None,
        help="selection arms separated by ';', e.g. 'nearest;sift:lam=1;sift:lam=1,unique;"
        "sift:kernel=model-mean;mmr;qdrant-mmr;random' (options: lam, alpha, k, kernel, unique, "
        "diversity)",
    )
    p.add_argument("--n-grid", type=_ints, default=None, help="N values, e.g. 1,5,10,20,50")
    p.add_argument("-k", "--k", type=int, default=None, help="candidates recalled per prompt")
    p.add_argument("--one-direction", action="store_true", help="recall by cosine, not |cosine|")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: paper's 5e-4)")
    p.add_argument("--model", default=None, help="HF id or local path (default: SmolLM2-135M)")
    p.add_argument("--embedder", default=None, help="minilm, hash, or an encoder path/id")
    p.add_argument("--chunk-tokens", type=int, default=None, help="tokens per chunk and prompt")
    p.add_argument("--prompts-per-domain", type=int, default=None)
    p.add_argument("--docs-per-domain", type=int, default=None)
    p.add_argument("--max-chunks-per-domain", type=int, default=None)
    p.add_argument("--no-decontaminate", action="store_true", help="keep 13-gram overlaps")
    p.add_argument("--dedup", action="store_true", help="deduplicate the data space")
    p.add_argument(
        "--redundancy", type=int, default=None, help="extra copies of every data chunk to inject"
    )
    p.add_argument("--split", choices=("all", "dev", "confirm"), default=None, help="prompt set")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--prompt-ids", type=_names, default=None, help="evaluate only these prompts")
    p.add_argument(
        "--holdout",
        type=int,
        default=12,
        help="with --collection: sources held out as prompts (default %(default)s)",
    )
    p.add_argument("--text-key", default="text", help="with --collection: payload key of the text")
    p.add_argument(
        "--source-key", default="source", help="with --collection: payload key of the source"
    )
    add_store_options(p)
    # No default collection: without --collection the evaluation builds its own corpus.
    p.set_defaults(collection=None)
    p.add_argument(
        "--reranker", default=None, help="grpc://host:port of a reranker service (else in-process)"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite table.md, summary.json, results.csv and plots from --out's results "
        "(works while a run is still going; no model is loaded)",
    )
    p.add_argument(
        "--redundancy-runs",
        nargs="+",
        default=None,
        metavar="R=DIR",
        help="with --report-only: runs of one setting at r injected copies (e.g. 0=runs/r0 "
        "1=runs/r1 3=runs/r3); writes redundancy.png into --out",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def preset_from_args(args: argparse.Namespace) -> Any:
    """The preset (``default`` or ``quick``) with the command line's overrides applied."""
    from ._setup import PRESETS, with_overrides

    base = PRESETS["quick" if args.quick else (args.preset or "default")]
    top: dict[str, Any] = {
        "model": args.model,
        "embedder": args.embedder,
        "learning_rate": args.lr,
        "chunk_tokens": args.chunk_tokens,
        "prompts_per_domain": args.prompts_per_domain,
        "docs_per_domain": args.docs_per_domain,
        "max_chunks_per_domain": args.max_chunks_per_domain,
        "domains": args.domains,
        "corpus_paths": tuple(args.corpus) if args.corpus else None,
        "seed": args.seed,
        "redundancy": args.redundancy,
        "prompt_split": args.split,
    }
    changes = {k: v for k, v in top.items() if v is not None}
    if args.no_decontaminate:
        changes["decontaminate"] = False
    if args.dedup:
        changes["dedup"] = True
    ev = {
        "eval_arms": args.arms,
        "eval_n_grid": args.n_grid,
        "eval_k": args.k,
        "eval_seed": args.seed,
    }
    changes.update({k: v for k, v in ev.items() if v is not None})
    if args.one_direction:
        changes["eval_both_directions"] = False
    return with_overrides(base, **changes)


def _report_only(args: argparse.Namespace) -> int:
    import json

    from qdrant_sift.errors import ConfigError

    from ._report import write_reports
    from ._results import ResultStore

    out = Path(args.out)
    if args.redundancy_runs:
        return _redundancy_report(out, args.redundancy_runs)
    if not (out / "run.json").exists():
        raise ConfigError(f"{out} holds no evaluation (no run.json)")
    meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
    grid = meta["config"]["n_grid"]
    rows = list(ResultStore(out / "results.jsonl").rows.values())
    arms = list(args.arms or meta["config"]["arms"])
    rows = [r for r in rows if r["arm"] in {"base", *arms}]
    title = "qdrant-sift evaluation"
    if meta.get("collection"):
        title += f" on {meta['collection']}"
    paths = write_reports(
        rows, out, grid, preamble=f"Partial or finished run in {out}.", title=title
    )
    if not args.no_plots:
        from ._plots import write_plots

        write_plots(rows, out, list(grid))
    print(paths["table"].read_text(encoding="utf-8"))
    return 0


def _redundancy_report(out: Path, specs: list[str]) -> int:
    """redundancy.png and redundancy.md from runs at r injected copies, on what they share.

    Runs of one setting at several r may differ in prompts, arms and N (a folder reused from a
    sweep holds more); every mean and comparison uses only the prompts, arms and N that every run
    has, so the points of one line are the same prompts under more copies.
    """
    import json

    from qdrant_sift.errors import ConfigError

    from ._plots import write_redundancy_plot
    from ._report import redundancy_table
    from ._results import ResultStore

    runs: dict[int, list[dict[str, Any]]] = {}
    arm_sets: list[list[str]] = []
    grids: list[set[int]] = []
    for spec in specs:
        r, eq, folder = spec.partition("=")
        if not eq or not r.strip().isdigit() or not (Path(folder) / "run.json").exists():
            raise ConfigError(f"expected R=DIR with an evaluation in DIR, got {spec!r}")
        meta = json.loads((Path(folder) / "run.json").read_text(encoding="utf-8"))
        rows = list(ResultStore(Path(folder) / "results.jsonl").rows.values())
        runs[int(r)] = rows
        arm_sets.append([a for a in meta["config"]["arms"] if any(x["arm"] == a for x in rows)])
        grids.append({int(x["n"]) for x in rows if x["arm"] != "base"})
    arms = [a for a in arm_sets[0] if all(a in other for other in arm_sets[1:])]
    grid = sorted(set.intersection(*grids))
    done = [
        {x["prompt_id"] for x in rows if x["arm"] == a and int(x["n"]) == n}
        for rows in runs.values()
        for a in arms
        for n in grid
    ]
    prompts = set.intersection(*done) if done else set()
    if not arms or not grid or not prompts:
        raise ConfigError("the runs share no arm, N and prompt to compare")
    runs = {r: [x for x in rows if x["prompt_id"] in prompts] for r, rows in runs.items()}
    out.mkdir(parents=True, exist_ok=True)
    path = write_redundancy_plot(runs, arms, grid, out / "redundancy.png")
    (out / "redundancy.md").write_text(
        redundancy_table(runs, arms, grid, sorted(prompts)), encoding="utf-8"
    )
    print(f"wrote {path} and {out / 'redundancy.md'} ({len(prompts)} prompts)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        return _report_only(args)
    import torch

    from ._setup import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = preset_from_args(args)
    progress = not args.no_progress
    reranker = _reranker(args)
    try:
        if args.collection is not None:
            return _run_collection(args, preset, progress, reranker)
        result = evaluate(
            preset, args.out, progress=progress, plots=not args.no_plots, prompts=args.prompt_ids,
            reranker=reranker,
        )  # fmt: skip
    finally:
        if reranker is not None:
            reranker.close()
    print(Path(result["table"]).read_text(encoding="utf-8"))
    print(f"results: {args.out} ({result['rows']} rows)")
    return 0


def _reranker(args: argparse.Namespace) -> Any:
    if not args.reranker:
        return None
    from qdrant_sift.reranker import RemoteReranker

    return RemoteReranker(args.reranker)


def _run_collection(args: argparse.Namespace, preset: Any, progress: bool, reranker: Any) -> int:
    from qdrant_sift.client.cli import store_from_args

    from ._collection import evaluate_collection

    store = store_from_args(args)
    try:
        result = evaluate_collection(
            store, args.out, preset, n_prompts=args.holdout, text_key=args.text_key,
            source_key=args.source_key, progress=progress, plots=not args.no_plots,
            reranker=reranker,
        )  # fmt: skip
    finally:
        store.close()
    print(Path(result["table"]).read_text(encoding="utf-8"))
    print(f"results: {args.out} ({result['rows']} rows)")
    return 0
