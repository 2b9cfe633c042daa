"""Evaluation reports: mean bits per byte per arm and N, and paired comparisons with nearest.

The question is paired: on the same prompt, does an arm's fine-tuning lower bits per byte more
than nearest neighbours'? Each comparison gives the per-prompt relative difference
(arm − nearest) / nearest, its mean with a paired bootstrap 95 % interval (prompts resampled with
replacement), and sign counts. Means compare only prompts that have every arm at that N.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["correlation", "paired_comparison", "redundancy_table", "summarize", "write_reports"]

_CSV_FIELDS = (
    "prompt_id", "domain", "arm", "n", "steps", "distinct", "bpb", "base_bpb",
    "prior_variance", "variance", "stopped_early", "seconds",
)  # fmt: skip
BOOTSTRAP_RESAMPLES = 10_000


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average ranks of ties
        idx = x == v
        ranks[idx] = ranks[idx].mean()
    return ranks


def correlation(x: Iterable[float], y: Iterable[float]) -> dict[str, float | int]:
    """Pearson and Spearman correlation of paired samples (NaN with fewer than 3 points)."""
    a, b = np.asarray(list(x), float), np.asarray(list(y), float)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return {"n": len(a), "pearson": float("nan"), "spearman": float("nan")}
    return {
        "n": len(a),
        "pearson": float(np.corrcoef(a, b)[0, 1]),
        "spearman": float(np.corrcoef(_rank(a), _rank(b))[0, 1]),
    }


def _arms(rows: list[dict[str, Any]]) -> list[str]:
    seen = dict.fromkeys(r["arm"] for r in rows)
    first = [a for a in ("base", "nearest") if a in seen]
    return first + sorted(a for a in seen if a not in first)


def paired_comparison(
    rows: list[dict[str, Any]],
    arm: str,
    baseline: str,
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """``arm`` vs ``baseline`` at N on the prompts that have both (None when none do).

    ``mean_rel`` is the mean over prompts of (arm − baseline) / baseline bits per byte (negative:
    the arm taught more); ``ci95`` its paired percentile-bootstrap interval; ``better``/``worse``
    count prompts where the arm is lower/higher.
    """

    def values(name: str) -> dict[str, float]:
        return {
            r["prompt_id"]: float(r["bpb"])
            for r in rows
            if r["arm"] == name and (name == "base" or int(r["n"]) == n)
        }

    va, vb = values(arm), values(baseline)
    ids = sorted(set(va) & set(vb))
    if not ids:
        return None
    a = np.array([va[i] for i in ids])
    b = np.array([vb[i] for i in ids])
    rel = (a - b) / b
    rng = np.random.default_rng(seed)
    boot = rel[rng.integers(0, len(rel), size=(resamples, len(rel)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "prompts": len(ids),
        "mean_rel": float(rel.mean()),
        "ci95": [float(lo), float(hi)],
        "mean_delta_bpb": float((a - b).mean()),
        "better": int((a < b).sum()),
        "worse": int((a > b).sum()),
        "median_rel": float(np.median(rel)),
    }


def _complete(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Rows at N (and base) of the prompts that every *complete* arm has at N.

    Complete arms are those run on the most prompts at N; their means then compare alike. An arm
    run on fewer prompts (added to a folder later, or stopped) keeps its own prompts among these,
    and its cell says how many, instead of shrinking every other arm's mean to its subset.
    """
    at_n = [r for r in rows if r["arm"] == "base" or int(r["n"]) == n]
    have: dict[str, set[str]] = {}
    for r in at_n:
        have.setdefault(r["arm"], set()).add(r["prompt_id"])
    tuned = {a: p for a, p in have.items() if a != "base"}
    if not tuned:
        return at_n
    most = max(len(p) for p in tuned.values())
    keep = set.intersection(*(p for p in tuned.values() if len(p) == most))
    return [r for r in at_n if r["prompt_id"] in keep]


def _group(rows: list[dict[str, Any]], grid: list[int]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    vs: dict[str, dict[str, Any]] = {}
    for n in grid:
        sub = _complete(rows, n)
        full = len({r["prompt_id"] for r in sub})
        for arm in _arms(sub):
            sel = [r for r in sub if r["arm"] == arm]
            table.setdefault(arm, {})[str(n)] = {
                "prompts": len(sel),
                "partial": len(sel) < full,
                "bpb": float(np.mean([r["bpb"] for r in sel])),
                "steps": float(np.mean([r["steps"] for r in sel])),
                "distinct": float(np.mean([r.get("distinct", r["steps"]) for r in sel])),
            }
        for arm in _arms(rows):
            if arm in ("base", "nearest") or "nearest" not in table:
                continue
            cmp = paired_comparison(rows, arm, "nearest", n)
            if cmp is not None:
                vs.setdefault(arm, {})[str(n)] = cmp
    return {"prompts": len({r["prompt_id"] for r in rows}), "table": table, "vs_nearest": vs}


def summarize(rows: list[dict[str, Any]], n_grid: Iterable[int]) -> dict[str, Any]:
    """Means per (domain, arm, N), paired comparisons with nearest, uncertainty vs gain."""
    grid = sorted({int(n) for n in n_grid})
    domains = sorted({r["domain"] for r in rows})
    out: dict[str, Any] = {"n_grid": grid, "overall": _group(rows, grid), "domains": {}}
    for d in domains:
        out["domains"][d] = _group([r for r in rows if r["domain"] == d], grid)
    sift = [
        r for r in rows
        if r["arm"].startswith("sift") and r["steps"] > 0 and r.get("variance") is not None
    ]  # fmt: skip
    out["uncertainty_vs_gain"] = correlation(
        (r["prior_variance"] - r["variance"] for r in sift),
        (r["base_bpb"] - r["bpb"] for r in sift),
    )
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} %"


def _mean_cell(arm: str, c: dict[str, Any]) -> str:
    text = _fmt(c["bpb"]) if arm == "base" else f"{_fmt(c['bpb'])} ({c['distinct']:.1f})"
    return f"{text} [{c['prompts']} prompts]" if c.get("partial") else text


def _comparison_cell(arm: str, c: dict[str, Any]) -> str:
    lo, hi = c["ci95"]
    return f"{_pct(c['mean_rel'])} [{_pct(lo)}, {_pct(hi)}] {c['better']}/{c['worse']}"


def _table(head: str, by_arm: dict[str, dict[str, Any]], grid: list[int], cell: Any) -> list[str]:
    """One markdown table: an arm per row, an N per column, "–" where a cell is missing."""
    lines = [
        f"| {head} | " + " | ".join(f"N={n}" for n in grid) + " |",
        "|---|" + "---|" * len(grid),
    ]
    for arm, cells in by_arm.items():
        vals = [cell(arm, cells[str(n)]) if str(n) in cells else "–" for n in grid]
        lines.append(f"| {arm} | " + " | ".join(vals) + " |")
    return [*lines, ""]


def _markdown(summary: dict[str, Any], title: str, preamble: str) -> str:
    grid = summary["n_grid"]
    lines = [f"# {title}", "", preamble, ""] if preamble else [f"# {title}", ""]
    lines += [
        "Mean bits per byte of the held-out prompt after one LoRA step per selected chunk (lower "
        "is better); each cell averages the prompts that every arm run on the most prompts has "
        "at that N (an arm run on fewer says on how many, in square brackets), with the mean "
        "number of distinct chunks among the N steps in brackets. Below each table: every arm "
        "against nearest neighbours, per prompt — mean relative difference, paired bootstrap 95 % "
        "interval, and on how many prompts the arm was better / worse.",
        "",
    ]
    groups = [("overall", summary["overall"]), *list(summary["domains"].items())]
    for name, group in groups:
        lines += [f"## {name} ({group['prompts']} prompts)", ""]
        lines += _table("arm", group["table"], grid, _mean_cell)
        if group["vs_nearest"]:
            lines += _table("arm vs nearest", group["vs_nearest"], grid, _comparison_cell)
    c = summary["uncertainty_vs_gain"]
    lines.append(
        f"SIFT's predicted uncertainty reduction vs realised gain: Spearman "
        f"{_fmt(c['spearman'], 2)}, Pearson {_fmt(c['pearson'], 2)} over {c['n']} checkpoints."
    )
    return "\n".join(lines) + "\n"


def write_reports(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    n_grid: Iterable[int],
    *,
    title: str = "qdrant-sift evaluation",
    preamble: str = "",
    arms: Iterable[str] | None = None,
) -> dict[str, Path]:
    """``results.csv``, ``summary.json`` and ``table.md`` in ``out_dir``.

    ``arms`` limits the report to those arms (and base): rows of arms a folder once ran but the
    current run does not would otherwise shrink every mean to the prompts they reached.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arms is not None:
        keep = {"base", *arms}
        rows = [r for r in rows if r["arm"] in keep]
    rows = sorted(rows, key=lambda r: (r["prompt_id"], r["arm"], int(r["n"])))
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, n_grid)
    json_path = out / "summary.json"
    json_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    md_path = out / "table.md"
    md_path.write_text(_markdown(summary, title, preamble), encoding="utf-8")
    return {"csv": csv_path, "summary": json_path, "table": md_path}


def redundancy_table(
    runs: dict[int, list[dict[str, Any]]], arms: list[str], grid: list[int], prompts: list[str]
) -> str:
    """Markdown: mean bits per byte per arm, N and injected copies r, then each arm vs nearest."""
    cols = [(n, r) for n in grid for r in sorted(runs)]
    head = "| arm | " + " | ".join(f"r={r}, N={n}" for n, r in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    lines = [
        "# Bits per byte against injected copies r",
        "",
        f"{len(prompts)} prompts, the same under every r: {', '.join(prompts)}.",
        "Mean bits per byte (distinct chunks among the N steps in brackets); below, each arm "
        "against nearest neighbours at the same r (mean relative difference, paired bootstrap "
        "95 % interval, better / worse prompts).",
        "",
        head,
        rule,
    ]
    for arm in arms:
        cells = []
        for n, r in cols:
            sel = [x for x in runs[r] if x["arm"] == arm and int(x["n"]) == n]
            bpb = float(np.mean([x["bpb"] for x in sel]))
            cells.append(f"{_fmt(bpb)} ({float(np.mean([x['distinct'] for x in sel])):.1f})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", head.replace("| arm |", "| arm vs nearest |"), rule]
    for arm in arms:
        if arm == "nearest":
            continue
        cells = []
        for n, r in cols:
            c = paired_comparison(runs[r], arm, "nearest", n)
            cells.append("–" if c is None else _comparison_cell(arm, c))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
