"""Plain-text rendering of selections and results for the CLI (tables people can scan)."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

from qdrant_sift.client._types import AdaptResult, Document, ProgressEvent

__all__ = [
    "TqdmProgress",
    "adapt_and_report",
    "format_documents",
    "format_result",
    "format_timings",
]


def _snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def format_documents(documents: Sequence[Document], prior: float | None = None) -> str:
    """One row per pick: rank, σ² after the pick, recall score, source, snippet.

    The σ² column is why a pick was made: each row shows how much uncertainty about the prompt
    is left once the model has learned from this chunk and every chunk above it.
    """
    width = shutil.get_terminal_size((120, 20)).columns
    lines = []
    if prior is not None:
        lines.append(f"uncertainty before any pick: σ²₀ = {prior:.4f}")
    header = f"{'#':>3}  {'σ² after':>9}  {'score':>6}  {'source':<28}  text"
    lines.append(header)
    lines.append("-" * min(width, 120))
    for doc in documents:
        source = str(doc.metadata.get("source", doc.id))
        if "chunk_index" in doc.metadata:
            source = f"{source.rsplit('/', 1)[-1]}#{doc.metadata['chunk_index']}"
        source = _snippet(source, 28)
        unc = f"{doc.uncertainty:9.4f}" if doc.uncertainty is not None else f"{'-':>9}"
        fixed = 3 + 2 + 9 + 2 + 6 + 2 + 28 + 2
        lines.append(
            f"{doc.rank + 1:>3}  {unc}  {doc.score:6.3f}  {source:<28}  "
            f"{_snippet(doc.text, max(20, min(width, 160) - fixed))}"
        )
    return "\n".join(lines)


def format_timings(result: AdaptResult) -> str:
    t = result.timings
    rows = [
        ("embed", t.embed),
        ("recall", t.recall),
        ("select", t.select),
        ("tune", t.tune),
        ("generate", t.generate),
        ("total", t.total),
    ]
    return "\n".join(f"  {name:<9}{seconds * 1000:10.1f} ms" for name, seconds in rows)


def format_result(result: AdaptResult, base_answer: str | None = None) -> str:
    """Selection table, the answer (next to the base model's when given), timings and losses."""
    parts = [format_documents(result.documents, result.uncertainty_before)]
    if result.base_model_only:
        parts.append(f"\nNo fine-tuning: {result.reason}")
    else:
        parts.append(
            f"\n{result.steps} LoRA steps; uncertainty {result.uncertainty_before:.4f} → "
            f"{result.uncertainty_after:.4f}"
            + ("; stopped early (adaptive)" if result.stopped_early else "")
        )
        if result.losses:
            parts.append(
                f"training loss: first {result.losses[0]:.3f}, last {result.losses[-1]:.3f}, "
                f"mean {sum(result.losses) / len(result.losses):.3f}"
            )
    wrap = textwrap.TextWrapper(width=100, initial_indent="  ", subsequent_indent="  ")
    if base_answer is not None:
        parts.append("\nBase model answer:\n" + wrap.fill(base_answer.strip() or "(empty)"))
    parts.append("\nAdapted model answer:\n" + wrap.fill(result.text.strip() or "(empty)"))
    parts.append("\nTimings:\n" + format_timings(result))
    return "\n".join(parts)


class TqdmProgress:
    """A :data:`ProgressCallback` drawing a tqdm bar for the fine-tuning steps (with the loss).

    The other stages take milliseconds (generation's time is in the report), so a bar for each
    would only flicker; they are not drawn.
    """

    def __init__(self, disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._disable = disable
        self._bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage != "tune":
            return
        if self._bar is None:
            self._bar = self._tqdm(
                total=event.total, desc="tune", unit="step", disable=self._disable
            )
        self._bar.n = event.step
        if "loss" in event.info:
            self._bar.set_postfix(loss=f"{event.info['loss']:.3f}")
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def adapt_and_report(
    client: Any,
    prompt: str,
    *,
    compare_base: bool,
    show_progress: bool,
    max_new_tokens: int,
    **options: Any,
) -> str:
    """Run ``adapt_and_generate`` with progress bars (and the base answer first if asked);
    return the readable report the CLI prints."""
    base = client.generate(prompt, max_new_tokens=max_new_tokens) if compare_base else None
    progress = TqdmProgress(disable=not show_progress)
    try:
        result = client.adapt_and_generate(
            prompt, max_new_tokens=max_new_tokens, progress=progress, **options
        )
    finally:
        progress.close()
    return format_result(result, base)
