"""``eval --collection``: the same comparison on a user's own collection.

Whole sources (the ``source`` payload that ``qdrant-sift ingest`` writes) are held out: one chunk
of each becomes a prompt, and every point of a held-out source is excluded from recall, so
neither the prompt nor its overlapping neighbours can be retrieved. What remains is searched
exactly as ``SiftClient`` would search it. Everything is checked before any model loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_sift.errors import ConfigError, DimensionMismatchError

from ._corpus import Prompt
from ._harness import run_evaluation

__all__ = ["HeldOutStore", "evaluate_collection", "hold_out_sources"]

#: Held-out prompts shorter than this many characters teach nothing measurable.
MIN_PROMPT_CHARS = 200


@dataclass(frozen=True)
class _Point:
    id: Any
    source: str
    domain: str
    text: str


def _points(store: Any, text_key: str, source_key: str) -> list[_Point]:
    out = []
    for p in store.scroll(with_vectors=False):
        text = p.payload.get(text_key)
        if not isinstance(text, str):
            continue
        source = p.payload.get(source_key)
        source = str(source) if source is not None else f"point:{p.id}"
        domain = str(p.payload.get("domain") or "collection")
        out.append(_Point(p.id, source, domain, text))
    return out


def hold_out_sources(
    store: Any,
    n_prompts: int,
    k: int,
    *,
    seed: int = 0,
    text_key: str = "text",
    source_key: str = "source",
) -> tuple[list[Prompt], HeldOutStore]:
    """``n_prompts`` prompts from distinct sources, and the store without those sources.

    Raises :class:`ConfigError` when the collection has no text payloads, too few sources long
    enough for a prompt, or fewer than ``k`` points left to recall from.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ConfigError(f"prompts must be a positive int, got {n_prompts!r}")
    points = _points(store, text_key, source_key)
    if not points:
        raise ConfigError(
            f"collection {store.collection!r} has no points with a string {text_key!r} payload "
            "(as qdrant-sift ingest writes); pass --text-key"
        )
    by_source: dict[str, list[_Point]] = {}
    for p in points:
        by_source.setdefault(p.source, []).append(p)
    eligible = sorted(s for s, ps in by_source.items() if any(
        len(p.text) >= MIN_PROMPT_CHARS for p in ps
    ))  # fmt: skip
    if len(eligible) < n_prompts:
        raise ConfigError(
            f"collection {store.collection!r} has {len(eligible)} sources with a chunk of at "
            f"least {MIN_PROMPT_CHARS} characters; {n_prompts} prompts need as many sources"
        )
    rng = random.Random(seed)
    rng.shuffle(eligible)
    held = eligible[:n_prompts]
    left = len(points) - sum(len(by_source[s]) for s in held)
    if left < k:
        raise ConfigError(
            f"holding out {n_prompts} sources leaves {left} points in {store.collection!r}, "
            f"fewer than k = {k}; ask for fewer prompts or a smaller k"
        )
    prompts = []
    for source in held:
        long = [p for p in by_source[source] if len(p.text) >= MIN_PROMPT_CHARS]
        chosen = long[rng.randrange(len(long))]
        digest = hashlib.blake2b(source.encode(), digest_size=4).hexdigest()
        prompts.append(Prompt(f"{chosen.domain}/{digest}", source, chosen.domain, chosen.text))
    loose_ids = {str(p.id) for s in held if s.startswith("point:") for p in by_source[s]}
    return prompts, HeldOutStore(store, held, loose_ids, source_key=source_key, text_key=text_key)


class HeldOutStore:
    """A store seen without the held-out sources (engine filter, plus an id check for points
    without a source payload). Closing it leaves the user's store to its owner."""

    def __init__(
        self,
        store: Any,
        sources: Sequence[str],
        ids: set[str],
        *,
        source_key: str = "source",
        text_key: str = "text",
    ) -> None:
        from qdrant_sift.client.stores import Filter, Match

        self.store = store
        self.collection = store.collection
        named = tuple(s for s in sources if not s.startswith("point:"))
        self._filter = Filter(must_not=(Match(source_key, named),)) if named else None
        self._ids = ids
        self._text_key = text_key

    @property
    def dim(self) -> int:
        return int(self.store.dim)

    def recall(self, query: Any, k: int, **kwargs: Any) -> Any:
        c = self.store.recall(query, k + len(self._ids), filter=self._filter, **kwargs)
        kept = c.take([i for i, pid in enumerate(c.ids) if str(pid) not in self._ids][:k])
        texts = [{**p, "text": p.get(self._text_key, "")} for p in kept.payloads]
        return dataclasses.replace(kept, payloads=texts)

    def check_embedder(self, embedder: Any) -> None:
        if int(embedder.dim) != self.dim:
            raise DimensionMismatchError(
                f"the embedder gives {embedder.dim}-d vectors, collection {self.collection!r} "
                f"holds {self.dim}-d; pass the --embedder it was ingested with"
            )

    def close(self) -> None:
        """Nothing of its own to release (the wrapped store belongs to the caller)."""


def evaluate_collection(
    store: Any,
    out_dir: str | Path,
    preset: Any,
    *,
    n_prompts: int = 12,
    text_key: str = "text",
    source_key: str = "source",
    progress: bool = True,
    plots: bool = True,
    log: Any = print,
    reranker: Any = None,
) -> dict[str, Any]:
    """Hold out ``n_prompts`` sources of ``store`` and run ``preset``'s arms on them.

    The preset supplies the model, tuning, embedder and harness settings (its corpus fields are
    unused). Prompts, sizes and the embedder's dimension are checked before the model loads.
    """
    from ._report import write_reports
    from ._setup import _embedder, _kernel_embedders, _load_tuner

    cfg = preset.eval
    prompts, held = hold_out_sources(
        store, n_prompts, cfg.k, seed=preset.seed, text_key=text_key, source_key=source_key
    )
    embedder = _embedder(preset.embedder)
    held.check_embedder(embedder)
    log(f"collection {store.collection!r}: {len(prompts)} held-out sources as prompts")
    tuner, model_name = _load_tuner(preset)
    meta = {
        "collection": store.collection,
        "held_out": sorted(p.doc_id for p in prompts),
        "preset": {k: v for k, v in preset.meta().items() if k in _TUNING_FIELDS},
        "model_name": model_name,
    }
    results = run_evaluation(
        prompts, tuner, held, embedder, out_dir, cfg, reranker=reranker,
        kernels=_kernel_embedders(preset, tuner), meta=meta, progress=progress,
    )  # fmt: skip
    rows = [r for r in results.rows.values() if r["arm"] in {"base", *cfg.arms}]
    preamble = (
        f"Collection {store.collection!r}: {len(prompts)} held-out sources (all their points "
        f"excluded from recall); model {model_name}, lr {tuner.config.learning_rate:g}, "
        f"K = {cfg.k}, embedder {preset.embedder}."
    )
    paths = write_reports(rows, out_dir, cfg.n_grid, preamble=preamble,
                          title=f"qdrant-sift evaluation on {store.collection}")  # fmt: skip
    result: dict[str, Any] = {"rows": len(rows), **{k: str(v) for k, v in paths.items()}}
    if plots:
        from ._plots import write_plots

        result["plots"] = [str(p) for p in write_plots(rows, out_dir, list(cfg.n_grid))]
    return result


_TUNING_FIELDS = ("model", "embedder", "learning_rate", "lora_rank", "lora_alpha", "seed")
