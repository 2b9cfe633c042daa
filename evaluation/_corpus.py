"""Evaluation corpora: a data space of chunks and a held-out prompt set, split by document.

The split is by document group, never by chunk, so no prompt's own document can be retrieved.
Prompts come from deduplicated documents; the data space keeps its natural duplicates unless
asked to deduplicate (exact, then whitespace-normalised hash). Data chunks sharing any 13-word
sequence with a prompt are always dropped (GPT-3-style decontamination: licence and changelog
texts repeat across packages, and a copy of the prompt in the data space would make nearest
neighbours look far better than it is).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qdrant_sift.errors import InvalidInputError

from ._corpus_sources import SourceDocument

__all__ = [
    "Corpus",
    "CorpusChunk",
    "Prompt",
    "build_corpus",
    "dedup_documents",
    "load_documents",
    "normalized_hash",
    "token_chunker",
]

Chunker = Callable[[str], list[str]]
_NGRAM = 13


@dataclass(frozen=True)
class CorpusChunk:
    """One data-space chunk; ``doc_id`` names the document it was cut from."""

    id: int
    doc_id: str
    domain: str
    text: str


@dataclass(frozen=True)
class Prompt:
    """One held-out prompt: a chunk of a document none of whose group is in the data space."""

    id: str
    doc_id: str
    domain: str
    text: str


@dataclass
class Corpus:
    """The data space, the prompts, and what building them dropped (for the report)."""

    chunks: list[CorpusChunk]
    prompts: list[Prompt]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return sorted({p.domain for p in self.prompts})

    def save(self, path: str | Path) -> None:
        """One JSON file: chunks, prompts, stats (reloaded by :meth:`load` on resume)."""
        data = {
            "chunks": [asdict(c) for c in self.chunks],
            "prompts": [asdict(p) for p in self.prompts],
            "stats": self.stats,
        }
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            chunks=[CorpusChunk(**c) for c in data["chunks"]],
            prompts=[Prompt(**p) for p in data["prompts"]],
            stats=data.get("stats", {}),
        )


def normalized_hash(text: str) -> str:
    """Hash of the text with all whitespace runs collapsed (catches re-wrapped copies)."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).hexdigest()


def _exact_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def dedup_documents(docs: Iterable[SourceDocument]) -> tuple[list[SourceDocument], dict[str, int]]:
    """Drop exact duplicates, then whitespace-normalised duplicates; keep the first copy."""
    exact: set[str] = set()
    norm: set[str] = set()
    out: list[SourceDocument] = []
    dropped = {"exact": 0, "whitespace": 0, "empty": 0}
    for doc in docs:
        if not doc.text.strip():
            dropped["empty"] += 1
            continue
        e, n = _exact_hash(doc.text), normalized_hash(doc.text)
        if e in exact:
            dropped["exact"] += 1
            continue
        if n in norm:
            dropped["whitespace"] += 1
            continue
        exact.add(e)
        norm.add(n)
        out.append(doc)
    return out, dropped


def load_documents(
    source: str | Path,
    *,
    domain: str | None = None,
    suffixes: Sequence[str] = (".txt", ".md", ".rst", ".py"),
) -> list[SourceDocument]:
    """Documents from a JSONL file (``text``, optional ``domain``/``id``) or a folder.

    In a folder every file with one of ``suffixes`` is a document; its domain is ``domain`` or
    else the name of its first sub-folder (``corpus/news/a.txt`` -> ``news``).
    """
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"corpus source {path} does not exist")
    docs: list[SourceDocument] = []
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path}:{lineno}: not JSON: {exc}") from exc
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise InvalidInputError(f"{path}:{lineno}: needs a string 'text' field")
                dom = domain or str(row.get("domain") or "default")
                docs.append(
                    SourceDocument(str(row.get("id", f"{path.name}:{lineno}")), dom, row["text"])
                )
        return docs
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes):
        rel = file.relative_to(path)
        dom = domain or (rel.parts[0] if len(rel.parts) > 1 else "default")
        text = file.read_text(encoding="utf-8", errors="replace")
        docs.append(SourceDocument(str(rel), dom, text))
    if not docs:
        raise InvalidInputError(f"no files ending in {list(suffixes)} under {path}")
    return docs


def token_chunker(tokenizer: Any, chunk_tokens: int, min_tokens: int | None = None) -> Chunker:
    """Cut text into consecutive, non-overlapping windows of ``chunk_tokens`` tokens.

    ``tokenizer`` is anything :func:`qdrant_sift.client.chunking.as_span_tokenizer` takes (the
    language model's own tokenizer, so a chunk costs what a training step costs). Chunks are exact
    slices of the source text. A trailing piece shorter than ``min_tokens`` (default: half a
    chunk) is dropped, so every chunk costs about the same to train on.
    """
    from qdrant_sift.client.chunking import as_span_tokenizer, chunk_text

    if chunk_tokens < 2:
        raise InvalidInputError(f"chunk_tokens must be >= 2, got {chunk_tokens}")
    floor = max(chunk_tokens // 2 if min_tokens is None else min_tokens, 1)
    spans = as_span_tokenizer(tokenizer)

    def chunk(text: str) -> list[str]:
        pieces = chunk_text(text, spans, chunk_tokens=chunk_tokens, overlap=0)
        return [c.text for c in pieces if c.n_tokens >= floor]

    return chunk


def _ngrams(text: str, n: int = _NGRAM) -> set[int]:
    words = text.split()
    return {hash(tuple(words[i : i + n])) for i in range(max(len(words) - n + 1, 0))}


def build_corpus(
    docs: Sequence[SourceDocument],
    chunker: Chunker,
    *,
    prompts_per_domain: int = 8,
    max_chunks_per_domain: int | None = 1500,
    seed: int = 0,
    decontaminate: bool = True,
    dedup: bool = False,
) -> Corpus:
    """Split documents by group into prompt and data sides, chunk, decontaminate.

    Per domain, whole groups are drawn (seeded) until ``prompts_per_domain`` documents with a
    full-size chunk are held out; each gives one prompt (a random full-size chunk of it). All other
    groups form the data space, chunked, at most ``max_chunks_per_domain`` chunks per domain.

    The data space keeps its natural duplicates unless ``dedup`` (real collections are full of
    them, and redundancy is exactly what SIFT is meant to handle). Prompts are always drawn from
    the deduplicated documents, so both settings hold out the same prompts, and data chunks that
    copy or share a 13-gram with a prompt are always dropped: that is leakage, not redundancy.
    """
    if prompts_per_domain < 1:
        raise InvalidInputError(f"prompts_per_domain must be >= 1, got {prompts_per_domain}")
    unique, dropped_docs = dedup_documents(docs)
    rng = random.Random(seed)
    by_domain: dict[str, dict[str, list[SourceDocument]]] = {}
    for doc in unique:
        by_domain.setdefault(doc.domain, {}).setdefault(doc.split_key, []).append(doc)

    prompts: list[Prompt] = []
    held_keys: set[str] = set()
    for domain in sorted(by_domain):
        groups = sorted(by_domain[domain])
        rng.shuffle(groups)
        held = 0
        for key in groups:
            if held >= prompts_per_domain:
                break
            pieces = [(d, c) for d in by_domain[domain][key] for c in chunker(d.text)]
            if pieces:  # the whole group is held out (in every domain); one chunk is the prompt
                longest = max(len(c) for _, c in pieces)
                full = [(d, c) for d, c in pieces if len(c) >= 0.8 * longest]
                doc, text = full[rng.randrange(len(full))]
                prompts.append(Prompt(f"{domain}/{held}", doc.id, domain, text))
                held_keys.add(key)
                held += 1
    data_side = unique if dedup else [d for d in docs if d.text.strip()]
    data_docs = [d for d in data_side if d.split_key not in held_keys]

    prompt_hashes = {normalized_hash(p.text) for p in prompts}
    prompt_grams: set[int] = set()
    if decontaminate:
        for p in prompts:
            prompt_grams |= _ngrams(p.text)
    chunks: list[CorpusChunk] = []
    seen: set[str] = set()
    per_domain: dict[str, int] = {}
    dropped = {"duplicate_chunks": 0, "prompt_overlap": 0, "documents_over_cap": 0}
    order = list(range(len(data_docs)))
    rng.shuffle(order)  # the cap then keeps a random sample of documents, not the first ones
    for i in order:
        doc = data_docs[i]
        cap = max_chunks_per_domain
        if cap is not None and per_domain.get(doc.domain, 0) >= cap:
            dropped["documents_over_cap"] += 1
            continue
        for text in chunker(doc.text):
            if cap is not None and per_domain.get(doc.domain, 0) >= cap:
                break
            h = normalized_hash(text)
            if dedup and h in seen:
                dropped["duplicate_chunks"] += 1
                continue
            if h in prompt_hashes or (decontaminate and _ngrams(text) & prompt_grams):
                dropped["prompt_overlap"] += 1
                continue
            seen.add(h)
            chunks.append(CorpusChunk(len(chunks), doc.id, doc.domain, text))
            per_domain[doc.domain] = per_domain.get(doc.domain, 0) + 1
    if not prompts:
        raise InvalidInputError("no document gave a prompt; are the texts long enough to chunk?")
    if not chunks:
        raise InvalidInputError("the data space is empty after holding out the prompts")
    stats = {
        "documents": len(docs),
        "dropped_documents": dropped_docs,
        "deduplicated": dedup,
        "data_chunks_per_domain": dict(sorted(per_domain.items())),
        "prompts_per_domain": {d: sum(p.domain == d for p in prompts) for d in sorted(by_domain)},
        **dropped,
    }
    return Corpus(chunks=chunks, prompts=prompts, stats=stats)
