"""Presets and parts for ``qdrant-sift eval``: the default and quick runs, a tiny model, a hashing
embedder, and :func:`evaluate`, which builds or reloads the corpus, runs the harness and writes
the table and plots.

The default preset is sized to finish in about 45 minutes on 2 CPU cores with SmolLM2-135M and
MiniLM; ``quick`` uses a tiny random Llama and a hashing embedder so CI can run the whole
pipeline, real fine-tuning included, in well under a minute.
"""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, InvalidInputError

from ._corpus import Corpus, Prompt, build_corpus, load_documents, token_chunker
from ._corpus_sources import collect_default_documents
from ._harness import EvalConfig, interleave_domains, run_evaluation
from ._redundancy import inject_redundancy
from ._vectors import corpus_store, embed_corpus

__all__ = [
    "PRESETS",
    "EvalPreset",
    "build_preset_corpus",
    "byte_level_tokenizer",
    "evaluate",
    "hashing_embedder",
    "prepare",
    "split_prompts",
    "tiny_model",
    "with_overrides",
]


#: Held-out prompts per domain that the sweep may tune on; the rest are the confirmatory set.
DEV_PROMPTS_PER_DOMAIN = 2
PROMPT_SPLITS = ("all", "dev", "confirm")


@dataclass(frozen=True)
class EvalPreset:
    """Corpus, model and harness settings of one evaluation run.

    ``dedup`` deduplicates the data space (off: real collections keep their duplicates);
    ``redundancy`` injects that many extra copies of every data chunk (exact, re-wrapped, edited);
    ``prompt_split`` picks the development prompts (the first ``DEV_PROMPTS_PER_DOMAIN`` held out
    in each domain), the confirmatory ones (the rest), or all.
    """

    eval: EvalConfig = field(default_factory=EvalConfig)
    model: str | None = None  # None: offline SmolLM2-135M-Instruct; "tiny": a random tiny Llama
    embedder: str = "minilm"  # "minilm", "hash", or a local encoder folder / HF id
    learning_rate: float | None = None  # None: the paper's 5e-4 for LoRA
    lora_rank: int = 64
    lora_alpha: float = 16.0
    chunk_tokens: int = 128
    docs_per_domain: int = 150
    prompts_per_domain: int = 3
    max_chunks_per_domain: int = 1000
    domains: tuple[str, ...] | None = None
    corpus_paths: tuple[str, ...] = ()
    decontaminate: bool = True
    dedup: bool = False
    redundancy: int = 0
    prompt_split: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_split not in PROMPT_SPLITS:
            raise ConfigError(f"prompt_split must be one of {PROMPT_SPLITS}")
        if self.redundancy < 0:
            raise ConfigError(f"redundancy must be >= 0, got {self.redundancy}")
        if self.prompt_split != "all" and self.prompts_per_domain <= DEV_PROMPTS_PER_DOMAIN:
            raise ConfigError(
                f"a dev/confirm split needs more than {DEV_PROMPTS_PER_DOMAIN} prompts per domain"
            )

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("eval")
        return data


#: The sweep's arms: λ over four decades, repeats vs unique, fewer candidates, the model kernel.
SWEEP_ARMS: tuple[str, ...] = (
    "nearest",
    "sift:lam=1",
    "sift:lam=0.01",
    "sift:lam=0.1",
    "sift:lam=10",
    "sift:lam=1,kernel=model-mean",
    "sift:lam=1,unique",
    "sift:lam=0.001",
    "sift:lam=1,k=50",
    "sift:lam=0.1,kernel=model-mean",
    "mmr",
    "qdrant-mmr",
    "random",
    # Adaptive SIFT, an α sweep: each cuts sift:lam=1's order, so it costs no extra steps.
    "sift:lam=1,alpha=0.05",
    "sift:lam=1,alpha=0.1",
    "sift:lam=1,alpha=0.2",
    "sift:lam=1,alpha=0.5",
    "sift:lam=1,alpha=1",
)

PRESETS: dict[str, EvalPreset] = {
    "default": EvalPreset(),
    "sweep": EvalPreset(
        eval=EvalConfig(arms=SWEEP_ARMS, n_grid=(5, 10, 20)),
        prompts_per_domain=10,
        prompt_split="dev",
    ),
    "confirm": EvalPreset(
        eval=EvalConfig(arms=("nearest", "sift"), n_grid=(10, 20, 50)),
        prompts_per_domain=10,
        prompt_split="confirm",
    ),
    "quick": EvalPreset(
        eval=EvalConfig(
            arms=("nearest", "sift", "sift:lam=1,alpha=0.5", "mmr", "qdrant-mmr", "random"),
            n_grid=(1, 2, 4),
            k=24,
        ),
        model="tiny",
        embedder="hash",
        lora_rank=8,
        chunk_tokens=64,
        docs_per_domain=10,
        prompts_per_domain=2,
        max_chunks_per_domain=60,
        domains=("python-code", "python-docs", "bible"),
    ),
}


def byte_level_tokenizer() -> Any:
    """A byte-level BPE without merges: one token per UTF-8 byte plus <s>, </s>, <pad> (259)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_model(seed: int = 0, max_positions: int = 256) -> tuple[Any, Any]:
    """A 2-layer random Llama with a byte-level tokenizer, built from a config (no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    return model, tok


_WORD = re.compile(r"\w+|[^\w\s]")


def hashing_embedder(dim: int = 256) -> Any:
    """Signed feature hashing of word unigrams and bigrams, L2-normalised (no model needed)."""
    from qdrant_sift.client.embed import FunctionEmbedder

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feat in words + [a + " " + b for a, b in itertools.pairwise(words)]:
                h = zlib.crc32(feat.encode())
                out[row, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
        return out

    return FunctionEmbedder(embed, dim, normalize=True)


def _embedder(name: str) -> Any:
    from qdrant_sift.client.embed import HFEmbedder, default_embedder

    if name == "hash":
        return hashing_embedder()
    if name == "minilm":
        return default_embedder()
    return HFEmbedder(name)


def _load_tokenizer(preset: EvalPreset) -> Any:
    from qdrant_sift.finetune import load_tokenizer

    if preset.model == "tiny":
        return tiny_model(preset.seed)[1]
    return load_tokenizer(preset.model)


def _load_tuner(preset: EvalPreset) -> tuple[Any, str]:
    from qdrant_sift.finetune import TestTimeTuner, TuneConfig, load_model

    if preset.model == "tiny":
        model, tok = tiny_model(preset.seed)
        name = "tiny-random-llama"
    else:
        model, tok = load_model(preset.model)
        name = preset.model or "SmolLM2-135M-Instruct"
    cfg = TuneConfig(
        learning_rate=preset.learning_rate,
        lora_rank=preset.lora_rank,
        lora_alpha=preset.lora_alpha,
        seed=preset.seed,
    )
    return TestTimeTuner(model, tok, cfg), name


def build_preset_corpus(preset: EvalPreset, tokenizer: Any) -> tuple[Corpus, dict[str, str]]:
    """The preset's corpus: the user's folders/JSONL files, else the default offline domains."""
    if preset.corpus_paths:
        docs = [d for p in preset.corpus_paths for d in load_documents(p)]
        notes = {p: "user corpus" for p in preset.corpus_paths}
    else:
        domains = list(preset.domains) if preset.domains else None
        docs, notes = collect_default_documents(
            preset.docs_per_domain, seed=preset.seed, domains=domains
        )
    corpus = build_corpus(
        docs,
        token_chunker(tokenizer, preset.chunk_tokens),
        prompts_per_domain=preset.prompts_per_domain,
        max_chunks_per_domain=preset.max_chunks_per_domain,
        seed=preset.seed,
        decontaminate=preset.decontaminate,
        dedup=preset.dedup,
    )
    if preset.redundancy:
        corpus = inject_redundancy(corpus, preset.redundancy, seed=preset.seed)
    corpus.stats["sources"] = notes
    return corpus, notes


def split_prompts(prompts: list[Prompt], split: str) -> list[Prompt]:
    """The development or confirmatory prompts (by their rank within the domain), interleaved."""
    if split not in PROMPT_SPLITS:
        raise ConfigError(f"prompt split must be one of {PROMPT_SPLITS}, got {split!r}")
    chosen = []
    for p in prompts:
        rank = int(p.id.rsplit("/", 1)[1])
        dev = rank < DEV_PROMPTS_PER_DOMAIN
        if split == "all" or (split == "dev") == dev:
            chosen.append(p)
    return interleave_domains(chosen)


def _kernel_embedders(preset: EvalPreset, tuner: Any) -> dict[str, Any]:
    from qdrant_sift.finetune import ModelEmbedder

    names = {a.kernel for a in preset.eval.parsed_arms} - {"recall"}
    return {
        name: ModelEmbedder(
            tuner.model, tuner.tokenizer, pooling=name.removeprefix("model-"),
            max_tokens=2 * preset.chunk_tokens,
        )
        for name in sorted(names)
    }  # fmt: skip


def _check_size(preset: EvalPreset, corpus: Corpus, prompts: list[Prompt]) -> None:
    if len(corpus.chunks) < preset.eval.k:
        raise ConfigError(
            f"the data space holds {len(corpus.chunks)} chunks, fewer than k = {preset.eval.k}"
        )
    per_domain = corpus.stats.get("prompts_per_domain", {})
    short = {d: n for d, n in per_domain.items() if n < preset.prompts_per_domain}
    if short and not prompts:
        raise ConfigError(f"domains gave too few prompts: {short}")


def prepare(preset: EvalPreset, out_dir: str | Path, *, log: Any = print) -> dict[str, Any]:
    """Load the model, build or reload the corpus, embed it and open its store (no tuning)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus_file = out / "corpus.json"
    if corpus_file.exists():
        corpus = Corpus.load(corpus_file)
        log(f"resuming: corpus from {corpus_file}")
    else:  # chunking needs only the tokenizer: a corpus too small fails before the model loads
        corpus, notes = build_preset_corpus(preset, _load_tokenizer(preset))
        for domain, note in notes.items():
            log(f"  {domain}: {note}")
    prompts = split_prompts(corpus.prompts, preset.prompt_split)
    _check_size(preset, corpus, prompts)
    if not corpus_file.exists():  # a corpus that fails the check is not kept for a resume
        corpus.save(corpus_file)
    tuner, model_name = _load_tuner(preset)
    embedder = _embedder(preset.embedder)
    vectors = embed_corpus(corpus, embedder, out / "embeddings.npy")
    store = corpus_store(corpus, vectors, out / "store")
    log(
        f"data space: {len(corpus.chunks)} chunks ({'deduplicated' if preset.dedup else 'natural'}"
        f", {preset.redundancy} injected copies), {len(prompts)} prompts ({preset.prompt_split}) "
        f"in {len(corpus.domains)} domains; model {model_name}, lr {tuner.config.learning_rate}"
    )
    return {
        "tuner": tuner, "model_name": model_name, "corpus": corpus, "prompts": prompts,
        "embedder": embedder, "store": store, "kernels": _kernel_embedders(preset, tuner),
    }  # fmt: skip


def evaluate(
    preset: EvalPreset,
    out_dir: str | Path,
    *,
    progress: bool = True,
    plots: bool = True,
    on_row: Any = None,
    log: Any = print,
    prompts: list[str] | tuple[str, ...] | None = None,
    reranker: Any = None,
) -> dict[str, Any]:
    """Run one preset into ``out_dir`` (resuming what is there) and write table and plots.

    ``reranker`` (default: in-process ``LocalReranker``) may be a ``RemoteReranker``: selection
    then runs in the service, as it would for ``SiftClient``.
    """
    out = Path(out_dir)
    parts = prepare(preset, out, log=log)
    chosen: list[Prompt] = parts["prompts"]
    if prompts is not None:
        wanted = set(prompts)
        unknown = wanted - {p.id for p in chosen}
        if unknown:
            raise InvalidInputError(f"unknown prompt ids {sorted(unknown)}")
        chosen = [p for p in chosen if p.id in wanted]
    meta = {"preset": preset.meta(), "model_name": parts["model_name"]}
    try:
        store = run_evaluation(
            chosen, parts["tuner"], parts["store"], parts["embedder"], out, preset.eval,
            reranker=reranker, kernels=parts["kernels"], meta=meta, progress=progress,
            on_row=on_row,
        )  # fmt: skip
    finally:
        parts["store"].close()
    from ._report import write_reports

    rows = list(store.rows.values())
    tuner = parts["tuner"]
    preamble = (
        f"Model {parts['model_name']}, LoRA r{preset.lora_rank} α{preset.lora_alpha:g}, "
        f"lr {tuner.config.learning_rate:g}, chunks of {preset.chunk_tokens} tokens, "
        f"K = {preset.eval.k} candidates recalled from Qdrant Edge (exact, "
        f"{'|cosine|' if preset.eval.both_directions else 'cosine'}, {preset.embedder}); "
        f"{len(parts['corpus'].chunks)} data chunks "
        f"({'deduplicated' if preset.dedup else 'natural duplicates kept'}, "
        f"{preset.redundancy} injected copies), {len(chosen)} {preset.prompt_split} prompts."
    )
    rows = [r for r in rows if r["arm"] in {"base", *preset.eval.arms}]
    paths = write_reports(rows, out, preset.eval.n_grid, preamble=preamble)
    result: dict[str, Any] = {"rows": len(rows), **{k: str(v) for k, v in paths.items()}}
    if plots:
        from ._plots import write_plots

        result["plots"] = [str(p) for p in write_plots(rows, out, list(preset.eval.n_grid))]
    return result


def with_overrides(preset: EvalPreset, **changes: Any) -> EvalPreset:
    """A copy of ``preset`` with top-level fields and ``eval_<field>`` harness fields replaced."""
    ev = {k.removeprefix("eval_"): v for k, v in changes.items() if k.startswith("eval_")}
    top = {k: v for k, v in changes.items() if not k.startswith("eval_")}
    return replace(preset, eval=replace(preset.eval, **ev), **top)
