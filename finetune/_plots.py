"""PNG plots of an evaluation (matplotlib with the Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._eval_report import correlation

__all__ = ["write_plots"]

_COLORS = {
    "base": "black",
    "nearest": "tab:blue",
    "sift": "tab:red",
    "sift-adaptive": "tab:orange",
    "mmr": "tab:green",
    "random": "tab:gray",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bpb_vs_n(plt: Any, rows: list[dict[str, Any]], grid: list[int], path: Path) -> None:
    domains = ["overall", *sorted({r["domain"] for r in rows})]
    cols = min(len(domains), 4)
    nrows = -(-len(domains) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax, dom in zip(axes.flat, domains, strict=False):
        sub = rows if dom == "overall" else [r for r in rows if r["domain"] == dom]
        base = np.mean([r["bpb"] for r in sub if r["strategy"] == "base"] or [np.nan])
        ax.axhline(base, color="black", lw=1, ls="--", label="base")
        for strategy in ("nearest", "sift", "sift-adaptive", "mmr", "random"):
            pts = [
                (n, np.mean([r["bpb"] for r in sub if r["strategy"] == strategy and r["n"] == n]))
                for n in grid
                if any(r["strategy"] == strategy and r["n"] == n for r in sub)
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "o-", color=_COLORS[strategy], label=strategy, ms=3)
        n_prompts = len({r["prompt_id"] for r in sub})
        ax.set_title(f"{dom} ({n_prompts} prompts)", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("N (chunks selected = steps)")
        ax.set_ylabel("bits per byte")
    for ax in list(axes.flat)[len(domains) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gain_vs_uncertainty(plt: Any, rows: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    sift = [r for r in rows if r["strategy"] == "sift" and r["steps"] > 0 and r["variance"]]
    x = [r["prior_variance"] - r["variance"] for r in sift]
    y = [r["base_bpb"] - r["bpb"] for r in sift]
    corr = correlation(x, y)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ns = sorted({r["n"] for r in sift})
    cmap = plt.get_cmap("viridis", max(len(ns), 2))
    for i, n in enumerate(ns):
        pts = [(a, b) for a, b, r in zip(x, y, sift, strict=True) if r["n"] == n]
        ax.scatter(*zip(*pts, strict=True), s=12, color=cmap(i), label=f"N={n}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("predicted uncertainty reduction σ²₀ − σ²_N (SIFT)")
    ax.set_ylabel("realised gain: base − tuned bits per byte")
    ax.set_title(
        f"Pearson r = {corr['pearson']:.3f}, Spearman ρ = {corr['spearman']:.3f} "
        f"({corr['n']} points)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return corr


def _adaptive_steps(plt: Any, rows: list[dict[str, Any]], grid: list[int], path: Path) -> bool:
    cap = grid[-1]
    ada = [r for r in rows if r["strategy"] == "sift-adaptive" and r["n"] == cap]
    if not ada:
        return False
    sift = {r["prompt_id"]: r for r in rows if r["strategy"] == "sift" and r["n"] == cap}
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    xs = [r["steps"] for r in ada]
    ax.scatter(xs, [r["base_bpb"] - r["bpb"] for r in ada], s=14, color=_COLORS["sift-adaptive"],
               label=f"adaptive SIFT (cap {cap})")  # fmt: skip
    full = [sift[r["prompt_id"]] for r in ada if r["prompt_id"] in sift]
    if full:
        ax.scatter([cap] * len(full), [r["base_bpb"] - r["bpb"] for r in full], s=14,
                   color=_COLORS["sift"], marker="x", label=f"SIFT, all {cap} steps")  # fmt: skip
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("gradient steps spent")
    ax.set_ylabel("gain: base − tuned bits per byte")
    ax.set_title(f"adaptive SIFT: mean {np.mean(xs):.1f} of {cap} steps", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(rows: list[dict[str, Any]], out_dir: str | Path, n_grid: list[int]) -> list[Path]:
    """Write ``bpb_vs_n.png``, ``gain_vs_uncertainty.png`` and (adaptive) ``adaptive_steps.png``."""
    plt = _pyplot()
    out = Path(out_dir)
    grid = sorted(n_grid)
    paths = [out / "bpb_vs_n.png", out / "gain_vs_uncertainty.png"]
    _bpb_vs_n(plt, rows, grid, paths[0])
    _gain_vs_uncertainty(plt, rows, paths[1])
    if _adaptive_steps(plt, rows, grid, out / "adaptive_steps.png"):
        paths.append(out / "adaptive_steps.png")
    return paths
