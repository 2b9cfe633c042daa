"""Corpus builder: split by document, deduplication, decontamination, loaders, default sources."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from qdrant_sift.errors import InvalidInputError
from qdrant_sift.eval import _corpus_sources as sources
from qdrant_sift.eval._corpus import (
    Corpus,
    build_corpus,
    dedup_documents,
    load_documents,
    normalized_hash,
    token_chunker,
)
from qdrant_sift.eval._corpus_sources import SourceDocument, collect_default_documents, roff_to_text

WORDS = [f"w{i}" for i in range(15)]


def _text(seed: int, n_words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n_words))


def _chunker() -> object:
    return token_chunker("regex", 20)


def test_dedup_exact_and_whitespace_keeps_first() -> None:
    a = SourceDocument("a", "d", "hello  world\nagain")
    docs = [
        a,
        SourceDocument("b", "d", a.text),
        SourceDocument("c", "d", "hello world again "),
        SourceDocument("e", "d", "   "),
        SourceDocument("f", "d", "something else"),
    ]
    kept, dropped = dedup_documents(docs)
    assert [d.id for d in kept] == ["a", "f"]
    assert dropped == {"exact": 1, "whitespace": 1, "empty": 1}
    assert normalized_hash("x  y\n") == normalized_hash("x y")


def test_split_by_document_no_prompt_text_in_data_space() -> None:
    docs = [SourceDocument(f"{dom}-{i}", dom, _text(hash((dom, i)) % 10_000)) for dom in ("a", "b")
            for i in range(12)]  # fmt: skip
    corpus = build_corpus(docs, _chunker(), prompts_per_domain=3, seed=1)
    assert len(corpus.prompts) == 6
    assert corpus.stats["prompts_per_domain"] == {"a": 3, "b": 3}
    prompt_docs = {p.doc_id for p in corpus.prompts}
    assert prompt_docs.isdisjoint({c.doc_id for c in corpus.chunks})
    chunk_hashes = {normalized_hash(c.text) for c in corpus.chunks}
    for p in corpus.prompts:
        assert normalized_hash(p.text) not in chunk_hashes
        assert all(p.text not in c.text for c in corpus.chunks)
        assert p.text in next(d.text for d in docs if d.id == p.doc_id)  # an exact slice
    assert len({c.id for c in corpus.chunks}) == len(corpus.chunks)


def test_group_keeps_related_documents_on_one_side() -> None:
    docs = []
    for i in range(10):
        docs.append(SourceDocument(f"code-{i}", "code", _text(i), group=f"mod{i}"))
        docs.append(SourceDocument(f"doc-{i}", "docs", _text(100 + i), group=f"mod{i}"))
    corpus = build_corpus(docs, _chunker(), prompts_per_domain=2, seed=3)
    held = {d.group for d in docs if d.id in {p.doc_id for p in corpus.prompts}}
    data_groups = {d.group for d in docs if d.id in {c.doc_id for c in corpus.chunks}}
    assert held and held.isdisjoint(data_groups)


def test_decontamination_drops_copies_of_prompt_text_in_other_documents() -> None:
    docs = [SourceDocument(f"d{i}", "x", _text(i)) for i in range(8)]
    # Every document is copied, re-wrapped, inside a longer document: wherever the prompt comes
    # from, its text also lies in the data space under another id.
    docs += [SourceDocument(f"copy{i}", "x", _text(50 + i, 5) + "\n" + d.text.replace(" ", "\n"))
             for i, d in enumerate(docs)]  # fmt: skip
    corpus = build_corpus(docs, _chunker(), prompts_per_domain=1, seed=0)
    assert corpus.stats["prompt_overlap"] > 0
    words = corpus.prompts[0].text.split()
    grams = {tuple(words[i : i + 13]) for i in range(len(words) - 12)}
    for c in corpus.chunks:
        cw = c.text.split()
        assert not grams & {tuple(cw[i : i + 13]) for i in range(len(cw) - 12)}
    loose = build_corpus(docs, _chunker(), prompts_per_domain=1, seed=0, decontaminate=False)
    assert len(loose.chunks) > len(corpus.chunks)


def test_domain_cap_and_chunk_dedup() -> None:
    docs = [SourceDocument(f"d{i}", "x", _text(i, 400)) for i in range(10)]
    docs.append(SourceDocument("dup", "x", docs[5].text + " tail"))  # same chunks as d5, but one
    corpus = build_corpus(
        docs, _chunker(), prompts_per_domain=1, max_chunks_per_domain=25, dedup=True
    )
    assert len(corpus.chunks) == 25
    assert len({normalized_hash(c.text) for c in corpus.chunks}) == 25


def test_natural_duplicates_kept_by_default_with_the_same_prompts() -> None:
    docs = [SourceDocument(f"d{i}", "x", _text(i, 200)) for i in range(8)]
    docs += [SourceDocument(f"copy{i}", "x", docs[i].text) for i in range(8)]  # mirrored documents
    natural = build_corpus(docs, _chunker(), prompts_per_domain=2, seed=4)
    dedup = build_corpus(docs, _chunker(), prompts_per_domain=2, seed=4, dedup=True)
    assert [p.text for p in natural.prompts] == [p.text for p in dedup.prompts]
    assert len(natural.chunks) > len(dedup.chunks)
    hashes = [normalized_hash(c.text) for c in natural.chunks]
    assert len(set(hashes)) < len(hashes)  # the mirrors stay in the data space
    assert len({normalized_hash(c.text) for c in dedup.chunks}) == len(dedup.chunks)
    # Decontamination still holds: a mirror of a prompt's document never leaks its text.
    for p in natural.prompts:
        assert all(p.text not in c.text for c in natural.chunks)


def test_errors_are_typed() -> None:
    with pytest.raises(InvalidInputError):
        build_corpus([SourceDocument("a", "x", "short")], token_chunker("regex", 50))
    with pytest.raises(InvalidInputError):
        build_corpus([], _chunker(), prompts_per_domain=0)
    with pytest.raises(InvalidInputError):
        token_chunker("regex", 1)


def test_load_jsonl_and_folder(tmp_path: Path) -> None:
    jl = tmp_path / "c.jsonl"
    jl.write_text(
        json.dumps({"text": "one", "domain": "news"}) + "\n\n" + json.dumps({"text": "two"}) + "\n"
    )
    docs = load_documents(jl)
    assert [(d.domain, d.text) for d in docs] == [("news", "one"), ("default", "two")]
    (tmp_path / "f" / "law").mkdir(parents=True)
    (tmp_path / "f" / "law" / "a.txt").write_text("statute")
    (tmp_path / "f" / "top.md").write_text("readme")
    (tmp_path / "f" / "skip.bin").write_text("x")
    docs = load_documents(tmp_path / "f")
    assert sorted((d.domain, d.text) for d in docs) == [("default", "readme"), ("law", "statute")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n')
    with pytest.raises(InvalidInputError, match="text"):
        load_documents(bad)
    bad.write_text("not json\n")
    with pytest.raises(InvalidInputError, match="JSON"):
        load_documents(bad)
    with pytest.raises(InvalidInputError):
        load_documents(tmp_path / "missing")


def test_corpus_save_load_roundtrip(tmp_path: Path) -> None:
    docs = [SourceDocument(f"d{i}", "x", _text(i)) for i in range(5)]
    corpus = build_corpus(docs, _chunker(), prompts_per_domain=1)
    corpus.save(tmp_path / "c.json")
    again = Corpus.load(tmp_path / "c.json")
    assert again.chunks == corpus.chunks and again.prompts == corpus.prompts
    assert again.stats == json.loads(json.dumps(corpus.stats))


def test_roff_to_text() -> None:
    page = '.TH LS 1\n.\\" comment\n.SH NAME\nls \\- list \\fBdirectory\\fR contents\n.PP\n.B -a\n'
    text = roff_to_text(page)
    assert "NAME" in text and "ls - list directory contents" in text and "-a" in text
    assert "comment" not in text and "\\f" not in text


def test_default_sources_real_text_and_missing_source(monkeypatch: pytest.MonkeyPatch) -> None:
    docs, notes = collect_default_documents(3, domains=["python-code", "python-docs"])
    assert {d.domain for d in docs} == {"python-code", "python-docs"}
    assert all(len(d.text) > 100 for d in docs)
    code = [d for d in docs if d.domain == "python-code"]
    assert all(d.group.startswith("stdlib:") for d in code)
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    docs, notes = collect_default_documents(2, domains=["bible"])
    assert docs == [] and notes["bible"].startswith("skipped")


def test_vendored_domain_holds_every_copy_in_one_group() -> None:
    docs, note = sources.python_vendored(40, random.Random(0))
    assert docs, note  # pip and setuptools vendor packaging etc. on every install
    groups: dict[str, list[SourceDocument]] = {}
    for d in docs:
        groups.setdefault(d.group, []).append(d)
    assert all(len(g) >= 2 for g in groups.values())
    assert all(not Path(d.id.removeprefix("vendored:")).is_absolute() for d in docs)
    corpus = build_corpus(docs, _chunker(), prompts_per_domain=3, seed=0)
    held = {d.group for d in docs if d.id in {p.doc_id for p in corpus.prompts}}
    data_groups = {next(d.group for d in docs if d.id == c.doc_id) for c in corpus.chunks}
    assert held and not held & data_groups
