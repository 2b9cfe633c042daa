"""The evaluation harness: bits per byte before and after test-time fine-tuning, per strategy.

For every prompt the same K candidates are recalled (cosine on the data-space embeddings, both
directions by default), each strategy orders them, and one LoRA step per pick is taken in that
order. Because a prefix of the order is exactly what a smaller N would train on, each strategy is
tuned once, up to the largest N, and the prompt's bits per byte is measured at every N of the grid
on the way (inside the tuner's progress callback, so the Adam state carries on). Adaptive SIFT cuts
SIFT's order, so it reuses SIFT's run and adds one checkpoint where it stops. The adapter is reset
after every strategy of every prompt; model, learning rate and candidates are shared.

Results are appended to ``results.jsonl`` one row at a time, keyed by (prompt, strategy, N), so a
killed run resumes where it stopped (a half-done strategy is re-tuned up to its missing N).
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, InvalidInputError

from ._corpus import Corpus, Prompt

__all__ = [
    "EVAL_STRATEGIES",
    "EvalConfig",
    "ResultStore",
    "embed_corpus",
    "recall_candidates",
    "run_evaluation",
]

#: Strategies the harness knows; ``base`` (no tuning) is always measured.
EVAL_STRATEGIES = ("base", "nearest", "sift", "mmr", "random", "sift-adaptive")
RowKey = tuple[str, str, int]


@dataclass(frozen=True)
class EvalConfig:
    """What differs between runs; everything else (model, lr, candidates) is shared."""

    strategies: tuple[str, ...] = ("nearest", "sift", "mmr", "random", "sift-adaptive")
    n_grid: tuple[int, ...] = (1, 5, 10, 20)
    k: int = 200
    lam: float = 0.01
    alpha: float = 0.2
    both_directions: bool = True
    diversity: float = 0.5
    seed: int = 0
    eval_max_length: int | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.strategies if s not in EVAL_STRATEGIES]
        if bad:
            raise ConfigError(f"unknown strategies {bad}; choose from {list(EVAL_STRATEGIES)}")
        grid = tuple(sorted({int(n) for n in self.n_grid}))
        if not grid or grid[0] < 1:
            raise ConfigError(f"n_grid must hold positive integers, got {self.n_grid!r}")
        object.__setattr__(self, "n_grid", grid)
        object.__setattr__(self, "strategies", tuple(dict.fromkeys(self.strategies)))
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not self.lam > 0 or not self.alpha > 0:
            raise ConfigError("lam and alpha must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResultStore:
    """Append-only JSONL of result rows; a torn last line (a kill mid-write) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[RowKey, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.rows[(row["prompt_id"], row["strategy"], int(row["n"]))] = row

    def __contains__(self, key: RowKey) -> bool:
        return key in self.rows

    def add(self, row: dict[str, Any]) -> None:
        key = (row["prompt_id"], row["strategy"], int(row["n"]))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        self.rows[key] = row


def _chunks_key(corpus: Corpus, embedder: Any) -> str:
    name = getattr(embedder, "name_or_path", type(embedder).__name__)
    h = hashlib.blake2b(f"{name}:{getattr(embedder, 'dim', '')}".encode(), digest_size=16)
    for c in corpus.chunks:
        h.update(c.text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def embed_corpus(corpus: Corpus, embedder: Any, cache: Path | None = None) -> np.ndarray:
    """(chunks, d) float32 unit vectors; cached as ``.npy`` (with a key of the texts) on request."""
    key = _chunks_key(corpus, embedder)
    key_file = cache.with_suffix(".key") if cache is not None else None
    fresh = cache is not None and key_file is not None and cache.exists() and key_file.exists()
    if fresh and key_file is not None and key_file.read_text(encoding="utf-8").strip() == key:
        return np.load(cache)  # type: ignore[arg-type]
    emb = np.asarray(embedder.embed_documents([c.text for c in corpus.chunks]), np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if cache is not None and key_file is not None:
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(cache)
        key_file.write_text(key, encoding="utf-8")
    return emb


def recall_candidates(
    query: np.ndarray, data: np.ndarray, k: int, *, both_directions: bool = True
) -> np.ndarray:
    """Indices of the K data rows most similar to ``query`` (by |cosine| if both directions).

    Exact brute force, as Qdrant's local mode does; ties broken by index so it is deterministic.
    """
    q = np.asarray(query, np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    scores = data @ q
    if both_directions:
        scores = np.abs(scores)
    k = min(k, scores.shape[0])
    return np.lexsort((np.arange(scores.shape[0]), -scores))[:k].astype(np.int64)


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


@dataclass
class _Run:
    """One tuning pass: an order of chunk ids and, per step count, the rows it must produce."""

    order: list[int]
    variances: list[float]
    checkpoints: dict[int, list[tuple[str, int]]]


def _plan(
    prompt: Prompt,
    q: np.ndarray,
    data: np.ndarray,
    cand: np.ndarray,
    cfg: EvalConfig,
    store: ResultStore,
) -> tuple[list[_Run], dict[str, Any]]:
    from qdrant_sift.reranker import select

    n_max = cfg.n_grid[-1]
    n_sel = min(n_max, len(cand))
    X = data[cand]
    runs: dict[str, _Run] = {}
    info: dict[str, Any] = {}
    for strategy in cfg.strategies:
        if strategy == "base":
            continue
        missing = [n for n in cfg.n_grid if (prompt.id, strategy, n) not in store]
        if not missing:
            continue
        name = "sift" if strategy == "sift-adaptive" else strategy
        sel = select(
            q,
            X,
            n_sel,
            strategy=name,
            lam=cfg.lam,
            alpha=cfg.alpha if strategy == "sift-adaptive" else None,
            diversity=cfg.diversity,
            seed=_stable_seed(cfg.seed, prompt.id, strategy),
        )
        order = [int(cand[i]) for i in sel.indices]
        variances = [float(v) for v in sel.variances]
        info[strategy] = {"prior_variance": sel.prior_variance, "length": len(order)}
        checkpoints: dict[int, list[tuple[str, int]]] = {}
        for n in missing:
            checkpoints.setdefault(min(n, len(order)), []).append((strategy, n))
        host = runs.get("sift")
        if strategy == "sift-adaptive" and host and host.order[: len(order)] == order:
            for step, keys in checkpoints.items():  # the same prefix: no extra tuning needed
                host.checkpoints.setdefault(step, []).extend(keys)
            continue
        runs[strategy] = _Run(order, variances, checkpoints)
    return list(runs.values()), info


def _evaluate_prompt(
    prompt: Prompt,
    q: np.ndarray,
    data: np.ndarray,
    corpus: Corpus,
    tuner: Any,
    cfg: EvalConfig,
    store: ResultStore,
    on_row: Callable[[dict[str, Any]], None] | None,
    on_step: Callable[[], None] | None,
) -> None:
    cand = recall_candidates(q, data, cfg.k, both_directions=cfg.both_directions)
    cand_hash = hashlib.blake2b(cand.tobytes(), digest_size=8).hexdigest()
    tuner.reset()

    def bpb() -> Any:
        return tuner.bits_per_byte(prompt.text, max_length=cfg.eval_max_length)

    base_key = (prompt.id, "base", 0)
    if base_key not in store:
        t0 = time.perf_counter()
        res = bpb()
        row = _row(prompt, "base", 0, 0, res, None, None, cand_hash, [], time.perf_counter() - t0)
        _emit(store, row, on_row)
    base = store.rows[base_key]["bpb"]

    runs, info = _plan(prompt, q, data, cand, cfg, store)
    for run in runs:
        if not run.checkpoints:
            continue
        last = max(run.checkpoints)
        start = time.perf_counter()
        if 0 in run.checkpoints:  # adaptive SIFT that selected nothing: the base model
            for strategy, n in run.checkpoints[0]:
                prior = info[strategy]["prior_variance"]
                _emit(
                    store,
                    _row(
                        prompt,
                        strategy,
                        n,
                        0,
                        None,
                        prior,
                        prior,
                        cand_hash,
                        [],
                        0.0,
                        base_bpb=base,
                    ),
                    on_row,
                )

        def checkpoint(step: Any, run: _Run = run, start: float = start) -> None:
            if on_step is not None:
                on_step()
            done = step.index + 1
            if done not in run.checkpoints:
                return
            res = bpb()
            for strategy, n in run.checkpoints[done]:
                prior = info[strategy]["prior_variance"]
                row = _row(
                    prompt,
                    strategy,
                    n,
                    done,
                    res,
                    prior,
                    run.variances[done - 1],
                    cand_hash,
                    run.order[:done],
                    time.perf_counter() - start,
                    base_bpb=base,
                )
                _emit(store, row, on_row)

        texts = [corpus.chunks[i].text for i in run.order[:last]]
        with tuner.session():
            if texts:
                tuner.tune(texts, progress=checkpoint)


def _row(
    prompt: Prompt,
    strategy: str,
    n: int,
    steps: int,
    res: Any,
    prior: float | None,
    variance: float | None,
    cand_hash: str,
    picks: list[int],
    seconds: float,
    *,
    base_bpb: float | None = None,
) -> dict[str, Any]:
    bpb = res.bits_per_byte if res is not None else base_bpb
    return {
        "prompt_id": prompt.id,
        "domain": prompt.domain,
        "strategy": strategy,
        "n": n,
        "steps": steps,
        "bpb": bpb,
        "base_bpb": base_bpb if base_bpb is not None else bpb,
        "nll_nats": res.nll_nats if res is not None else None,
        "n_bytes": res.n_bytes if res is not None else None,
        "prior_variance": prior,
        "variance": variance,
        "candidates": cand_hash,
        "picks": picks,
        "seconds": round(seconds, 3),
    }


def _emit(store: ResultStore, row: dict[str, Any], on_row: Callable[..., None] | None) -> None:
    store.add(row)
    if on_row is not None:
        on_row(row)


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to resume; strategies and N may grow (rows are keyed by them)."""
    data = json.loads(json.dumps(meta))
    for key in ("strategies", "n_grid"):
        data.get("config", {}).pop(key, None)
    return data


def _check_meta(out: Path, meta: dict[str, Any]) -> None:
    path = out / "run.json"
    if path.exists():
        old = _comparable(json.loads(path.read_text(encoding="utf-8")))
        new = _comparable(meta)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff == ["config"]:
                diff = [k for k in old["config"] if old["config"][k] != new["config"].get(k)]
            raise ConfigError(
                f"{out} holds results of a different run (differs in {diff}); "
                "use another output folder or delete it"
            )
    else:
        path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def run_evaluation(
    corpus: Corpus,
    tuner: Any,
    embedder: Any,
    out_dir: str | Path,
    config: EvalConfig | None = None,
    *,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    prompts: Sequence[str] | None = None,
) -> ResultStore:
    """Evaluate every prompt (or the ids in ``prompts``), appending to ``out_dir/results.jsonl``.

    ``meta`` (model name, learning rate, corpus settings …) is stored in ``run.json`` with the
    config; resuming into a folder of a different run raises ``ConfigError``. ``on_row`` sees
    every new row (tests interrupt a run from it).
    """
    from tqdm.auto import tqdm

    cfg = config or EvalConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_meta(out, {"config": cfg.to_dict(), **(meta or {})})
    chosen = _select_prompts(corpus.prompts, prompts)
    data = embed_corpus(corpus, embedder, out / "embeddings.npy")
    queries = np.asarray(embedder.embed_documents([p.text for p in chosen]), np.float32)
    store = ResultStore(out / "results.jsonl")
    tuned = [s for s in cfg.strategies if s not in ("base", "sift-adaptive")]
    todo = sum(  # steps still to take (a resumed run skips what is done)
        cfg.n_grid[-1]
        for p in chosen
        for s in tuned
        if any((p.id, s, n) not in store for n in cfg.n_grid)
    )
    bar = tqdm(total=todo, unit="step", disable=not progress, desc="eval")
    try:
        for prompt, q in zip(chosen, queries, strict=True):
            bar.set_postfix_str(prompt.id)
            _evaluate_prompt(prompt, q, data, corpus, tuner, cfg, store, on_row, bar.update)
    finally:
        bar.close()
    return store


def _select_prompts(all_prompts: Iterable[Prompt], ids: Sequence[str] | None) -> list[Prompt]:
    # Round-robin over domains, so a partial run already covers every domain.
    rank: dict[str, int] = {}
    keyed = []
    for p in all_prompts:
        rank[p.domain] = rank.get(p.domain, -1) + 1
        keyed.append((rank[p.domain], p.domain, p))
    chosen = [p for _, _, p in sorted(keyed, key=lambda t: (t[0], t[1]))]
    if ids is not None:
        wanted = set(ids)
        chosen = [p for p in chosen if p.id in wanted]
        if len(chosen) != len(wanted):
            raise InvalidInputError(f"unknown prompt ids {sorted(wanted - {p.id for p in chosen})}")
    if not chosen:
        raise InvalidInputError("there are no prompts to evaluate")
    return chosen
