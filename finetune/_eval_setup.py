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

from ._corpus import Corpus, build_corpus, load_documents, token_chunker
from ._corpus_sources import collect_default_documents
from ._evaluate import EvalConfig, run_evaluation

__all__ = [
    "PRESETS",
    "EvalPreset",
    "build_preset_corpus",
    "byte_level_tokenizer",
    "evaluate",
    "hashing_embedder",
    "tiny_model",
    "with_overrides",
]


@dataclass(frozen=True)
class EvalPreset:
    """Corpus, model and harness settings of one evaluation run."""

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
    seed: int = 0

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("eval")
        return data


PRESETS: dict[str, EvalPreset] = {
    "default": EvalPreset(),
    "quick": EvalPreset(
        eval=EvalConfig(n_grid=(1, 2, 4), k=24, alpha=0.5),
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


def _load_tuner(preset: EvalPreset) -> tuple[Any, str]:
    from ._config import TuneConfig
    from ._models import load_model
    from ._tuner import TestTimeTuner

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
    )
    corpus.stats["sources"] = notes
    return corpus, notes


def evaluate(
    preset: EvalPreset,
    out_dir: str | Path,
    *,
    progress: bool = True,
    plots: bool = True,
    on_row: Any = None,
    log: Any = print,
    prompts: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run one preset into ``out_dir`` (resuming what is there) and write table and plots."""
    from ._eval_report import write_reports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tuner, model_name = _load_tuner(preset)
    corpus_file = out / "corpus.json"
    if corpus_file.exists():
        corpus = Corpus.load(corpus_file)
        log(f"resuming: corpus from {corpus_file}")
    else:
        corpus, notes = build_preset_corpus(preset, tuner.tokenizer)
        corpus.save(corpus_file)
        for domain, note in notes.items():
            log(f"  {domain}: {note}")
    log(
        f"data space: {len(corpus.chunks)} chunks, {len(corpus.prompts)} prompts in "
        f"{len(corpus.domains)} domains; model {model_name}, lr {tuner.config.learning_rate}"
    )
    meta = {"preset": preset.meta(), "model_name": model_name}
    store = run_evaluation(
        corpus, tuner, _embedder(preset.embedder), out, preset.eval, meta=meta,
        progress=progress, on_row=on_row, prompts=prompts,
    )  # fmt: skip
    rows = list(store.rows.values())
    preamble = (
        f"Model {model_name}, LoRA r{preset.lora_rank} α{preset.lora_alpha:g}, "
        f"lr {tuner.config.learning_rate:g}, chunks of {preset.chunk_tokens} tokens, "
        f"K = {preset.eval.k} candidates (recalled by "
        f"{'|cosine|' if preset.eval.both_directions else 'cosine'} with {preset.embedder}), "
        f"λ = {preset.eval.lam:g}, adaptive α = {preset.eval.alpha:g}; "
        f"{len(corpus.chunks)} data chunks, {len(corpus.prompts)} held-out prompts."
    )
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
