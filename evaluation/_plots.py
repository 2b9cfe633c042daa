"""PNG plots of an evaluation (matplotlib with the Agg backend, imported only when plotting).

- ``bpb_vs_n.png``: mean bits per byte against N per arm, overall and per domain;
- ``vs_nearest.png``: each arm's paired relative difference to nearest with its bootstrap 95 %
  interval, per N (the question the evaluation asks, at a glance);
- ``frontier.png``: mean bits per byte against mean steps: fixed-N arms as curves, adaptive arms
  (an α sweep) as points — the compute frontier;
- ``redundancy.png`` (:func:`write_redundancy_plot`): bits per byte against injected copies r.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._report import paired_comparison

__all__ = ["write_plots", "write_redundancy_plot"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _mean(rows: list[dict[str, Any]], arm: str, n: int, key: str = "bpb") -> float | None:
    vals = [r[key] for r in rows if r["arm"] == arm and (arm == "base" or int(r["n"]) == n)]
    return float(np.mean(vals)) if vals else None


def _fixed_arms(rows: list[dict[str, Any]]) -> list[str]:
    arms = sorted({r["arm"] for r in rows if r["arm"] != "base" and "alpha=" not in r["arm"]})
    return sorted(arms, key=lambda a: (a != "nearest", a))


def _style(arm: str, i: int) -> dict[str, Any]:
    if arm == "nearest":
        return {"color": "tab:blue", "lw": 2.2, "ls": "-"}
    palette = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan", "tab:gray", "gold", "darkred", "navy", "teal"]  # fmt: skip
    return {"color": palette[i % len(palette)], "lw": 1.2, "ls": "-" if i < 10 else "--"}


def _bpb_vs_n(plt: Any, rows: list[dict[str, Any]], grid: list[int], path: Path) -> None:
    domains = ["overall", *sorted({r["domain"] for r in rows})]
    cols = min(len(domains), 4)
    nrows = -(-len(domains) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    arms = _fixed_arms(rows)
    for ax, dom in zip(axes.flat, domains, strict=False):
        sub = rows if dom == "overall" else [r for r in rows if r["domain"] == dom]
        base = _mean(sub, "base", 0)
        if base is not None:
            ax.axhline(base, color="black", lw=1, ls="--", label="base")
        for i, arm in enumerate(arms):
            pts = [(n, _mean(sub, arm, n)) for n in grid]
            pts = [(n, v) for n, v in pts if v is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=arm, **_style(arm, i))
        n_prompts = len({r["prompt_id"] for r in sub})
        ax.set_title(f"{dom} ({n_prompts} prompts)", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("N (chunks selected = steps)")
        ax.set_ylabel("bits per byte")
    for ax in list(axes.flat)[len(domains) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _vs_nearest(plt: Any, rows: list[dict[str, Any]], grid: list[int], path: Path) -> bool:
    arms = [a for a in _fixed_arms(rows) if a != "nearest"]
    if "nearest" not in {r["arm"] for r in rows} or not arms:
        return False
    fig, axes = plt.subplots(1, len(grid), figsize=(4.2 * len(grid), 0.5 + 0.32 * len(arms)),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, n in zip(axes.flat, grid, strict=True):
        for y, arm in enumerate(arms):
            c = paired_comparison(rows, arm, "nearest", n, resamples=2000)
            if c is None:
                continue
            lo, hi = c["ci95"]
            colour = "tab:green" if hi < 0 else ("tab:red" if lo > 0 else "tab:gray")
            ax.plot([100 * lo, 100 * hi], [y, y], color=colour, lw=2)
            ax.plot(100 * c["mean_rel"], y, "o", color=colour, ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(arms)), arms, fontsize=7)
        ax.set_title(f"N = {n}", fontsize=9)
        ax.set_xlabel("bits per byte vs nearest (%, paired, 95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _frontier(plt: Any, rows: list[dict[str, Any]], grid: list[int], path: Path) -> bool:
    adaptive = sorted({r["arm"] for r in rows if "alpha=" in r["arm"]})
    if not adaptive:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, arm in enumerate(a for a in _fixed_arms(rows) if a == "nearest" or a.startswith("sift")):
        pts = [(_mean(rows, arm, n, "steps"), _mean(rows, arm, n)) for n in grid]
        pts = [(s, v) for s, v in pts if s is not None and v is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, label=f"{arm} (N = {', '.join(map(str, grid))})",
                    **_style(arm, i))  # fmt: skip
    cap = grid[-1]
    for arm in adaptive:
        s, v = _mean(rows, arm, cap, "steps"), _mean(rows, arm, cap)
        if s is not None and v is not None:
            ax.plot(s, v, "s", color="tab:orange", ms=5)
            ax.annotate(arm.split("alpha=")[1].split(",")[0], (s, v), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.plot([], [], "s", color="tab:orange", label=f"adaptive SIFT (α labelled), cap N = {cap}")
    ax.set_xlabel("mean steps taken")
    ax.set_ylabel("mean bits per byte")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(rows: list[dict[str, Any]], out_dir: str | Path, n_grid: list[int]) -> list[Path]:
    """Write ``bpb_vs_n.png`` and, where the rows allow, ``vs_nearest.png`` and ``frontier.png``."""
    plt = _pyplot()
    out = Path(out_dir)
    grid = sorted(n_grid)
    paths = [out / "bpb_vs_n.png"]
    _bpb_vs_n(plt, rows, grid, paths[0])
    if _vs_nearest(plt, rows, grid, out / "vs_nearest.png"):
        paths.append(out / "vs_nearest.png")
    if _frontier(plt, rows, grid, out / "frontier.png"):
        paths.append(out / "frontier.png")
    return paths


def write_redundancy_plot(
    runs: dict[int, list[dict[str, Any]]], arms: list[str], ns: list[int], path: str | Path
) -> Path:
    """Bits per byte at each N against injected copies r (``runs`` maps r to its rows)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ns), figsize=(4.2 * len(ns), 3.4), squeeze=False)
    rs = sorted(runs)
    for ax, n in zip(axes.flat, ns, strict=True):
        for i, arm in enumerate(arms):
            pts = [(r, _mean(runs[r], arm, n)) for r in rs]
            pts = [(r, v) for r, v in pts if v is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=4, label=arm, **_style(arm, i))
        ax.set_title(f"N = {n}", fontsize=9)
        ax.set_xlabel("injected copies of every chunk (r)")
        ax.set_ylabel("mean bits per byte")
        ax.set_xticks(rs)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return Path(path)
