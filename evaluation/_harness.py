"""The evaluation harness: bits per byte before and after test-time fine-tuning, per arm.

It measures what users get: candidates come from a real :class:`VectorStore` (Qdrant Edge, exact,
by default; any store for ``eval --collection``), selection runs through the reranker interface
(:class:`LocalReranker` unless another is given), and "nearest" is a plain top-N store search.

For every prompt the K candidates are recalled once; each arm orders them (see ``_arms``) and one
LoRA step per pick is taken in that order. A prefix of the order is what a smaller N trains on,
so each distinct order is tuned once, up to the largest N, and bits per byte is measured at every
N of the grid on the way. Arms whose orders coincide (an adaptive arm cuts its host's order; λ
values that pick alike) share one tuning run. The adapter is reset between runs.

Rows are appended to ``results.jsonl``, keyed by (prompt, arm, N): a killed run resumes where it
stopped, and arms or N may be added to a finished run (the folder's files: :mod:`._results`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, InvalidInputError

from ._arms import Arm, parse_arms
from ._corpus import Prompt
from ._results import ResultStore, check_meta
from ._vectors import KernelCache

__all__ = [
    "DEFAULT_ARMS",
    "TIE_MARGIN",
    "EvalConfig",
    "recall_candidates",
    "run_evaluation",
]

#: Candidates recalled beyond K before the tie-sorted cut (see :func:`recall_candidates`).
TIE_MARGIN = 16

#: The default comparison: SIFT at the reranker's defaults against what users run instead.
DEFAULT_ARMS: tuple[str, ...] = ("nearest", "sift", "mmr", "qdrant-mmr", "random")


@dataclass(frozen=True)
class EvalConfig:
    """What the arms share: the N grid, how many candidates are recalled, how, and the seed."""

    arms: tuple[str, ...] = DEFAULT_ARMS
    n_grid: tuple[int, ...] = (1, 5, 10, 20)
    k: int = 200
    both_directions: bool = True
    seed: int = 0
    eval_max_length: int | None = None

    def __post_init__(self) -> None:
        arms = parse_arms(self.arms)
        object.__setattr__(self, "arms", tuple(a.name for a in arms))
        try:
            grid = tuple(sorted({int(n) for n in self.n_grid}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"n_grid must hold positive integers, got {self.n_grid!r}") from exc
        if not grid or grid[0] < 1:
            raise ConfigError(f"n_grid must hold positive integers, got {self.n_grid!r}")
        object.__setattr__(self, "n_grid", grid)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be a positive int, got {self.k!r}")
        too_wide = [a.name for a in arms if a.k is not None and a.k > self.k]
        if too_wide:
            raise ConfigError(f"arms {too_wide} ask for more candidates than k = {self.k}")

    @property
    def parsed_arms(self) -> tuple[Arm, ...]:
        return parse_arms(self.arms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


@dataclass
class _Run:
    """One tuning pass: the texts in pick order and, per step count, the rows it must produce."""

    keys: list[Any]
    texts: list[str]
    checkpoints: dict[int, list[tuple[str, int, dict[str, Any]]]] = field(default_factory=dict)


@dataclass
class _Context:
    """Everything an evaluation shares across prompts."""

    store: Any
    embedder: Any
    reranker: Any
    tuner: Any
    cfg: EvalConfig
    results: ResultStore
    kernels: dict[str, KernelCache]
    on_row: Callable[[dict[str, Any]], None] | None
    on_step: Callable[[], None] | None


def _qdrant_mmr(query: np.ndarray, vectors: np.ndarray, n: int, diversity: float) -> list[int]:
    """The engine's own MMR (qdrant-client local mode) over the recalled candidates."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:")
    try:
        client.create_collection(
            "mmr",
            vectors_config=models.VectorParams(
                size=vectors.shape[1], distance=models.Distance.COSINE
            ),
        )
        client.upsert("mmr", models.Batch(ids=list(range(len(vectors))), vectors=vectors.tolist()))
        mmr = models.Mmr(diversity=diversity, candidates_limit=len(vectors))
        res = client.query_points(
            "mmr", query=models.NearestQuery(nearest=query.tolist(), mmr=mmr), limit=n
        )
        return [int(p.id) for p in res.points]
    finally:
        client.close()


def _order(
    arm: Arm, prompt: Prompt, q: np.ndarray, cands: Any, n_max: int, ctx: _Context
) -> tuple[list[int], dict[str, Any]]:
    """Candidate positions in the arm's pick order, and what selection reported."""
    k = min(arm.k or len(cands), len(cands))
    vecs = cands.vectors[:k]
    if arm.strategy == "qdrant-mmr":
        diversity = 0.5 if arm.diversity is None else arm.diversity
        return _qdrant_mmr(q, vecs, min(n_max, k), diversity), {}
    query = q
    if arm.kernel != "recall":
        kc = ctx.kernels[arm.kernel]
        vecs = kc.vectors([p["text"] for p in cands.payloads[:k]])
        query = kc.vectors([prompt.text])[0]
    n = n_max if arm.strategy == "sift" and not arm.unique else min(n_max, k)
    sel = ctx.reranker.select(
        query, vecs, n, seed=_stable_seed(ctx.cfg.seed, prompt.id, arm.name),
        **arm.select_options(),
    )  # fmt: skip
    info = {
        "prior_variance": float(sel.prior_variance),
        "variances": [float(v) for v in sel.variances],
        "stopped_early": bool(sel.stopped_early),
    }
    return [int(i) for i in sel.indices], info


def _evaluate_prompt(prompt: Prompt, ctx: _Context) -> None:
    cfg, results, tuner = ctx.cfg, ctx.results, ctx.tuner
    arms = [a for a in parse_arms(cfg.arms) if any(
        (prompt.id, a.name, n) not in results for n in cfg.n_grid
    )]  # fmt: skip
    base_key = (prompt.id, "base", 0)
    if not arms and base_key in results:
        return
    tuner.reset()

    def bpb() -> float:
        return float(tuner.bits_per_byte(prompt.text, max_length=cfg.eval_max_length).bits_per_byte)

    if base_key not in results:
        t0 = time.perf_counter()
        value = bpb()
        _emit(ctx, _row(prompt, "base", 0, 0, value, value, [], {}, time.perf_counter() - t0))
    base = results.rows[base_key]["bpb"]
    if not arms:
        return
    q = np.asarray(ctx.embedder.embed_query(prompt.text), np.float32)
    n_max = cfg.n_grid[-1]
    cands = recall_candidates(ctx.store, q, cfg.k, both_directions=cfg.both_directions)
    if len(cands) == 0:
        raise InvalidInputError(f"no candidates recalled for prompt {prompt.id!r}")
    runs: dict[tuple[Any, ...], _Run] = {}
    info: dict[str, Any]
    for arm in arms:
        if arm.strategy == "nearest" and arm.kernel == "recall":  # a plain top-N search
            hits = ctx.store.recall(q, n_max, both_directions=False, exact=True)
            keys, texts, info = list(hits.ids), [p["text"] for p in hits.payloads], {}
        else:
            positions, info = _order(arm, prompt, q, cands, n_max, ctx)
            keys = [cands.ids[i] for i in positions]
            texts = [cands.payloads[i]["text"] for i in positions]
        run = _host_run(runs, keys, texts)
        for n in cfg.n_grid:
            if (prompt.id, arm.name, n) not in results:
                run.checkpoints.setdefault(min(n, len(keys)), []).append((arm.name, n, info))
    for run in sorted(runs.values(), key=lambda r: -len(r.keys)):
        _tune_run(prompt, run, base, bpb, ctx)


def recall_candidates(store: Any, query: np.ndarray, k: int, *, both_directions: bool) -> Any:
    """The K candidates every arm of a prompt sees: exact recall, ties in a reproducible order."""
    recalled = store.recall(query, k + TIE_MARGIN, both_directions=both_directions, exact=True)
    return _tie_sorted(recalled, k)


def _tie_sorted(cands: Any, k: int) -> Any:
    """The first K candidates in a reproducible order: equal scores (to 1e-6) by id.

    A reopened shard may return ties in another order (and cut a tie at K differently), while
    random and MMR picks depend on positions; so a few more than K are recalled and cut here.
    """
    keys = [
        (-round(abs(float(s)), 6), str(i)) for s, i in zip(cands.scores, cands.ids, strict=True)
    ]
    return cands.take(sorted(range(len(keys)), key=keys.__getitem__)[:k])


def _host_run(runs: dict[tuple[Any, ...], _Run], keys: list[Any], texts: list[str]) -> _Run:
    """The run whose order starts with ``keys`` (shared tuning), or a new one."""
    for order, run in runs.items():
        if order[: len(keys)] == tuple(keys):
            return run
    for order in list(runs):
        if tuple(keys[: len(order)]) == order:  # the new order extends an old one: take it over
            old = runs.pop(order)
            run = _Run(keys, texts, old.checkpoints)
            runs[tuple(keys)] = run
            return run
    run = _Run(keys, texts)
    runs[tuple(keys)] = run
    return run


def _tune_run(
    prompt: Prompt, run: _Run, base: float, bpb: Callable[[], float], ctx: _Context
) -> None:
    start = time.perf_counter()

    def emit(done: int, value: float) -> None:
        for arm, n, info in run.checkpoints.get(done, []):
            variances = info.get("variances") or []
            info_row = {
                "prior_variance": info.get("prior_variance"),
                "variance": variances[done - 1] if 0 < done <= len(variances) else None,
                "stopped_early": info.get("stopped_early"),
            }
            picks = run.keys[:done]
            row = _row(prompt, arm, n, done, value, base, picks, info_row,
                       time.perf_counter() - start)  # fmt: skip
            _emit(ctx, row)

    if 0 in run.checkpoints:  # an adaptive arm that stopped at once: the base model
        emit(0, base)
    last = max((s for s in run.checkpoints if s > 0), default=0)
    if last == 0:
        return

    def checkpoint(step: Any) -> None:
        if ctx.on_step is not None:
            ctx.on_step()
        done = step.index + 1
        if done in run.checkpoints:
            emit(done, bpb())

    ctx.tuner.reset()
    with ctx.tuner.session():
        ctx.tuner.tune(run.texts[:last], progress=checkpoint)


def _row(
    prompt: Prompt,
    arm: str,
    n: int,
    steps: int,
    value: float,
    base: float,
    picks: list[Any],
    info: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    return {
        "prompt_id": prompt.id,
        "domain": prompt.domain,
        "arm": arm,
        "n": n,
        "steps": steps,
        "distinct": len({str(p) for p in picks}),
        "bpb": value,
        "base_bpb": base,
        **info,
        "picks": [p if isinstance(p, int) else str(p) for p in picks],
        "seconds": round(seconds, 3),
    }


def _emit(ctx: _Context, row: dict[str, Any]) -> None:
    ctx.results.add(row)
    if ctx.on_row is not None:
        ctx.on_row(row)


def run_evaluation(
    prompts: Sequence[Prompt],
    tuner: Any,
    store: Any,
    embedder: Any,
    out_dir: str | Path,
    config: EvalConfig | None = None,
    *,
    reranker: Any = None,
    kernels: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> ResultStore:
    """Evaluate ``prompts`` against ``store``, appending to ``out_dir/results.jsonl``.

    ``embedder`` embeds prompts for recall (the store's embedder); ``reranker`` defaults to an
    in-process :class:`LocalReranker`; ``kernels`` maps a kernel name (``model-mean`` …) to an
    embedder, needed only by arms that use it. ``meta`` is stored in ``run.json``; resuming into a
    folder of another run raises :class:`ConfigError`. ``on_row`` sees every new row.
    """
    from tqdm.auto import tqdm

    cfg = config or EvalConfig()
    if not prompts:
        raise InvalidInputError("there are no prompts to evaluate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    needed = {a.kernel for a in cfg.parsed_arms} - {"recall"}
    missing = sorted(needed - set(kernels or {}))
    if missing:
        raise ConfigError(f"arms use kernels {missing} but no embedder was given for them")
    check_meta(out, {"config": cfg.to_dict(), **(meta or {})})
    if reranker is None:
        from qdrant_sift.reranker import LocalReranker

        reranker = LocalReranker()
    caches = {
        name: KernelCache(emb, out / f"kernel-{name}.f32") for name, emb in (kernels or {}).items()
    }
    results = ResultStore(out / "results.jsonl")
    tuned = [a for a in cfg.parsed_arms if not a.adaptive]
    todo = sum(  # at most this many steps remain (shared orders need fewer)
        cfg.n_grid[-1]
        for p in prompts
        for a in tuned
        if any((p.id, a.name, n) not in results for n in cfg.n_grid)
    )
    bar = tqdm(total=todo, unit="step", disable=not progress, desc="eval")
    ctx = _Context(store, embedder, reranker, tuner, cfg, results, caches, on_row, bar.update)
    try:
        for prompt in prompts:
            bar.set_postfix_str(prompt.id)
            _evaluate_prompt(prompt, ctx)
    finally:
        bar.close()
    return results


def interleave_domains(prompts: Iterable[Prompt]) -> list[Prompt]:
    """Round-robin over domains, so a partial run already covers every domain."""
    rank: dict[str, int] = {}
    keyed = []
    for p in prompts:
        rank[p.domain] = rank.get(p.domain, -1) + 1
        keyed.append((rank[p.domain], p.domain, p))
    return [p for _, _, p in sorted(keyed, key=lambda t: (t[0], t[1]))]
