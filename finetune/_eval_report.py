"""Aggregating evaluation rows into CSV, a JSON summary and a markdown table.

Bits per byte are averaged per prompt (each prompt weighs the same, as in the paper's tables);
SIFT against nearest neighbours is also compared prompt by prompt (wins and the paired mean
difference with its standard error), since the spread between prompts dwarfs the differences.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["correlation", "summarize", "write_reports"]

_ORDER = ("base", "nearest", "sift", "sift-adaptive", "mmr", "random")
_CSV_FIELDS = (
    "prompt_id", "domain", "strategy", "n", "steps", "bpb", "base_bpb", "nll_nats", "n_bytes",
    "prior_variance", "variance", "candidates", "seconds",
)  # fmt: skip


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average ranks of ties
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def correlation(x: Iterable[float], y: Iterable[float]) -> dict[str, float | int]:
    """Pearson r and Spearman ρ (NaN when fewer than 3 points or no spread)."""
    a, b = np.asarray(list(x), np.float64), np.asarray(list(y), np.float64)
    out: dict[str, float | int] = {"n": int(a.size), "pearson": math.nan, "spearman": math.nan}
    if a.size >= 3 and a.std() > 0 and b.std() > 0:
        out["pearson"] = float(np.corrcoef(a, b)[0, 1])
        ra, rb = _rank(a), _rank(b)
        if ra.std() > 0 and rb.std() > 0:
            out["spearman"] = float(np.corrcoef(ra, rb)[0, 1])
    return out


def _strategies(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["strategy"] for r in rows}
    return [s for s in _ORDER if s in present] + sorted(present - set(_ORDER))


def _cell(rows: list[dict[str, Any]], strategy: str, n: int) -> dict[str, Any] | None:
    sel = [r for r in rows if r["strategy"] == strategy and (strategy == "base" or r["n"] == n)]
    if not sel:
        return None
    bpb = np.array([r["bpb"] for r in sel])
    return {
        "bpb": float(bpb.mean()),
        "prompts": len(sel),
        "steps": float(np.mean([r["steps"] for r in sel])),
    }


def _paired(rows: list[dict[str, Any]], a: str, b: str, n: int) -> dict[str, Any] | None:
    """Per prompt ``bpb(a) - bpb(b)`` at N = n (negative: a is better)."""
    va = {r["prompt_id"]: r["bpb"] for r in rows if r["strategy"] == a and r["n"] == n}
    vb = {r["prompt_id"]: r["bpb"] for r in rows if r["strategy"] == b and r["n"] == n}
    ids = sorted(set(va) & set(vb))
    if not ids:
        return None
    d = np.array([va[i] - vb[i] for i in ids])
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    base = np.mean([vb[i] for i in ids])
    return {
        "prompts": len(ids),
        "wins": int((d < 0).sum()),
        "losses": int((d > 0).sum()),
        "mean_diff": float(d.mean()),
        "se": se,
        "relative": float(d.mean() / base) if base else math.nan,
    }


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the prompts that have every (strategy, N) of the run, so means compare alike."""
    cells = {(r["strategy"], r["n"]) for r in rows}
    have: dict[str, set[tuple[str, int]]] = {}
    for r in rows:
        have.setdefault(r["prompt_id"], set()).add((r["strategy"], r["n"]))
    done = {pid for pid, got in have.items() if got == cells}
    return [r for r in rows if r["prompt_id"] in done]


def summarize(rows: list[dict[str, Any]], n_grid: Iterable[int]) -> dict[str, Any]:
    """Means per (domain, strategy, N), paired SIFT-vs-NN comparisons and the correlations."""
    grid = sorted(n_grid)
    groups: dict[str, list[dict[str, Any]]] = {"overall": rows}
    for dom in sorted({r["domain"] for r in rows}):
        groups[dom] = [r for r in rows if r["domain"] == dom]
    out: dict[str, Any] = {"n_grid": grid, "groups": {}}
    for name, every in groups.items():
        sub = _complete(every)
        table = {s: {str(n): _cell(sub, s, n) for n in grid} for s in _strategies(sub)}
        pairs = {
            f"{a}-vs-nearest": {str(n): _paired(sub, a, "nearest", n) for n in grid}
            for a in ("sift", "sift-adaptive", "mmr", "random")
            if a in table and "nearest" in table
        }
        out["groups"][name] = {
            "prompts": len({r["prompt_id"] for r in sub}),
            "incomplete_prompts": len({r["prompt_id"] for r in every})
            - len({r["prompt_id"] for r in sub}),
            "table": table,
            "paired": pairs,
        }
    tuned = [
        r for r in _complete(rows) if r["strategy"] != "base" and r.get("variance") is not None
    ]
    sift = [r for r in tuned if r["strategy"] == "sift" and r["steps"] > 0]

    def pred(r: dict[str, Any]) -> float:
        return r["prior_variance"] - r["variance"]

    def gain(r: dict[str, Any]) -> float:
        return r["base_bpb"] - r["bpb"]

    out["correlation"] = {
        "sift_all_n": correlation(map(pred, sift), map(gain, sift)),
        "sift_per_n": {
            str(n): correlation(
                [pred(r) for r in sift if r["n"] == n], [gain(r) for r in sift if r["n"] == n]
            )
            for n in grid
        },
        "all_strategies_at_max_n": correlation(
            [pred(r) for r in tuned if r["n"] == grid[-1]],
            [gain(r) for r in tuned if r["n"] == grid[-1]],
        ),
    }
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _markdown(summary: dict[str, Any], title: str) -> str:
    grid = summary["n_grid"]
    lines = [f"# {title}", ""]
    lines.append(
        "Mean bits per byte of the held-out prompt after one LoRA step per selected chunk "
        "(lower is better); N = chunks selected. `sift-adaptive` cells also give the mean "
        "steps actually taken."
    )
    for name, group in summary["groups"].items():
        partial = group["incomplete_prompts"]
        note = f"; {partial} unfinished prompts left out" if partial else ""
        lines += ["", f"## {name} ({group['prompts']} prompts{note})", ""]
        lines.append("| strategy | " + " | ".join(f"N={n}" for n in grid) + " |")
        lines.append("|---|" + "---|" * len(grid))
        for strategy, cells in group["table"].items():
            vals = []
            for n in grid:
                c = cells[str(n)]
                text = _fmt(c["bpb"]) if c else "–"
                if c and strategy == "sift-adaptive":
                    text += f" ({c['steps']:.1f})"
                vals.append(text)
            lines.append(f"| {strategy} | " + " | ".join(vals) + " |")
        for pair, per_n in group["paired"].items():
            p = per_n.get(str(grid[-1]))
            if p:
                lines.append(
                    f"\n{pair} at N={grid[-1]}: better on {p['wins']}/{p['prompts']} prompts "
                    f"(worse on {p['losses']}), mean Δ {p['mean_diff']:+.4f} ± {_fmt(p['se'])} "
                    f"bpb ({100 * p['relative']:+.2f}%)"
                )
    corr = summary["correlation"]
    c = corr["sift_all_n"]
    lines += [
        "",
        "## Does SIFT's uncertainty predict the gain?",
        "",
        f"Realised gain (base − tuned bpb) against predicted reduction σ²₀ − σ²_N, SIFT rows: "
        f"Pearson r = {_fmt(c['pearson'], 3)}, Spearman ρ = {_fmt(c['spearman'], 3)} "
        f"({c['n']} points, all N).",
        "",
        "| N | Pearson r | Spearman ρ | prompts |",
        "|---|---|---|---|",
    ]
    for n, cc in corr["sift_per_n"].items():
        lines.append(f"| {n} | {_fmt(cc['pearson'], 3)} | {_fmt(cc['spearman'], 3)} | {cc['n']} |")
    a = corr["all_strategies_at_max_n"]
    lines.append(
        f"\nAll strategies at N={grid[-1]}: Pearson r = {_fmt(a['pearson'], 3)}, "
        f"Spearman ρ = {_fmt(a['spearman'], 3)} ({a['n']} points)."
    )
    return "\n".join(lines) + "\n"


def write_reports(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    n_grid: Iterable[int],
    *,
    title: str = "qdrant-sift evaluation",
    preamble: str = "",
) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.json`` and ``table.md``; return their paths."""
    out = Path(out_dir)
    rows = sorted(rows, key=lambda r: (r["prompt_id"], r["strategy"], r["n"]))
    summary = summarize(rows, n_grid)
    paths = {"csv": out / "results.csv", "json": out / "summary.json", "table": out / "table.md"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    text = _markdown(summary, title)
    if preamble:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n{preamble.strip()}\n\n{rest}"
    paths["table"].write_text(text, encoding="utf-8")
    return paths
