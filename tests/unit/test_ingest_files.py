"""Ingest: chunking, file types, bad input, report, add_texts, the CLI module."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest
from conftest_stores import DIM, HashEmbedder, write_corpus

from qdrant_sift.client import _cmd_ingest
from qdrant_sift.client.chunking import Chunk, RegexTokenizer, as_span_tokenizer, chunk_text
from qdrant_sift.client.ingest import add_texts, chunk_id, ingest
from qdrant_sift.client.stores import EdgeStore, QdrantStore
from qdrant_sift.errors import ConfigError, InvalidInputError

KW = dict(tokenizer="regex", chunk_tokens=10, overlap=2, batch_size=4, progress=False)


@pytest.fixture
def store():
    with QdrantStore("c", location=":memory:") as s:
        yield s


# --- chunking -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_tokens,overlap", [(5, 0), (5, 2), (7, 6), (100, 10)])
def test_chunks_are_exact_slices_with_overlap(chunk_tokens: int, overlap: int) -> None:
    text = "  ".join(f"word{i}, x" for i in range(40)) + "\n"
    spans = RegexTokenizer()(text)
    chunks = chunk_text(text, "regex", chunk_tokens, overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end] and c.n_tokens <= chunk_tokens
    starts = [spans.index(next(s for s in spans if s[0] == c.start)) for c in chunks]
    assert all(b - a == chunk_tokens - overlap for a, b in itertools.pairwise(starts))
    assert chunks[-1].end == spans[-1][1]  # the tail is covered
    assert chunks[0].start == spans[0][0]


def test_chunking_edge_cases() -> None:
    assert chunk_text("", "regex", 5, 1) == []
    assert chunk_text("   \n\t ", "regex", 5, 1) == []
    assert chunk_text("one", "regex", 5, 1) == [Chunk("one", 0, 0, 3, 1)]
    for bad in [(0, 0), (5, 5), (5, -1)]:
        with pytest.raises(ConfigError):
            chunk_text("a b", "regex", *bad)


def test_any_tokenizer_shape_works() -> None:
    """A callable of spans, a tokenizers.Tokenizer and a transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert [c.text for c in chunk_text("a b c d e", tok, 2, 0)] == ["a b", "c d", "e"]
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert [c.text for c in chunk_text("a b c d e", hf, 3, 1)] == ["a b c", "c d e"]
    assert [c.text for c in chunk_text("abcdef", lambda t: [(0, 2), (2, 4), (4, 6)], 2, 0)] == [
        "abcd",
        "ef",
    ]
    with pytest.raises(InvalidInputError):
        as_span_tokenizer(3.5)


# --- files --------------------------------------------------------------------------------


def test_reads_all_types_and_skips_bad_files(tmp_path, store) -> None:
    (tmp_path / "a.md").write_text("# Title\n\nSome *markdown* text here.", encoding="utf-8")
    (tmp_path / "b.rst").write_text("Heading\n=======\n\nrst body", encoding="utf-8")
    (tmp_path / "c.py").write_text("def f(x):\n    return x + 1\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("plain text " * 30, encoding="utf-8")
    (tmp_path / "e.txt").write_bytes(b"caf\xe9 latin-1, not UTF-8")
    (tmp_path / "empty.txt").write_text("   \n", encoding="utf-8")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("never read", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    lines = [
        json.dumps({"text": "first record", "lang": "en", "year": 2001}),
        "",
        "{not json",
        json.dumps({"title": "no text field"}),
        json.dumps({"text": "second record", "source": "ignored", "lang": "de"}),
    ]
    (tmp_path / "sub" / "r.jsonl").write_text("\n".join(lines), encoding="utf-8")
    report = ingest([tmp_path, tmp_path / "missing.txt"], store, HashEmbedder(), **KW)
    reasons = dict(report.skipped)
    assert report.files_read == 6  # a b c d empty r
    assert report.records_read == 7  # 5 files + 2 jsonl records
    assert any("not UTF-8" in r for r in reasons.values())
    assert reasons[str(tmp_path / "img.png")].startswith("unsupported")
    assert reasons[str(tmp_path / "missing.txt")] == "not found"
    assert any("invalid JSON" in r for p, r in report.skipped if p.endswith("r.jsonl:3"))
    assert any("'text'" in r for p, r in report.skipped if p.endswith("r.jsonl:4"))
    assert report.upserted == report.chunks == store.count()
    payloads = [p.payload for p in store.scroll()]
    recs = {p["text"]: p for p in payloads if p["source"].endswith((":1", ":5"))}
    assert recs["first record"]["lang"] == "en" and recs["first record"]["year"] == 2001
    assert recs["second record"]["source"].endswith("r.jsonl:5")  # reserved keys win
    assert not any("never read" in p["text"] for p in payloads)
    assert all(p["text"].strip() for p in payloads)
    assert "skipped" in report.summary()


def test_same_file_twice_and_metadata(tmp_path, store) -> None:
    f = tmp_path / "x.txt"
    f.write_text("alpha beta gamma", encoding="utf-8")
    report = ingest([f, tmp_path, str(f)], store, HashEmbedder(), metadata={"team": "a"}, **KW)
    assert report.files_read == 1 and store.count() == 1
    point = next(iter(store.scroll()))
    sync = {k: point.payload.pop(k) for k in ("source_hash", "source_chunks")}
    assert point.payload == {
        "team": "a",
        "text": "alpha beta gamma",
        "source": "x.txt",  # relative to the folder, or the name of a file given directly
        "source_id": "x.txt",
        "chunk_index": 0,
        "reader": "text",
    }
    assert sync["source_chunks"] == 1 and len(sync["source_hash"]) == 32
    assert point.id == chunk_id("x.txt", 0, "alpha beta gamma")


def test_custom_chunker(tmp_path, store) -> None:
    f = tmp_path / "x.md"
    f.write_text("para one\n\npara two\n\n\n\npara three", encoding="utf-8")
    report = ingest(f, store, HashEmbedder(), chunker=lambda t: t.split("\n\n"), progress=False)
    assert report.chunks == 3 and store.count() == 3
    texts = sorted(p.payload["text"] for p in store.scroll())
    assert texts == ["para one", "para three", "para two"]
    with pytest.raises(InvalidInputError):
        ingest(f, store, HashEmbedder(), chunker=lambda t: [1], progress=False)


def test_changed_file_replaces_its_chunks(tmp_path, store) -> None:
    """An edit replaces the file's chunks (it used to leave the old text beside the new)."""
    f = tmp_path / "x.txt"
    f.write_text("one two three", encoding="utf-8")
    ingest(f, store, HashEmbedder(), **KW)
    f.write_text("one two four", encoding="utf-8")
    report = ingest(f, store, HashEmbedder(), **KW)
    assert report.upserted == 1 and report.chunks_deleted == 1 and store.count() == 1
    assert [p.payload["text"] for p in store.scroll()] == ["one two four"]
    assert report.sources_changed == 1
    f.write_text("one two five", encoding="utf-8")
    report = ingest(f, store, HashEmbedder(), **{**KW, "cleanup": "none"})  # appends as before
    assert report.chunks_deleted == 0 and store.count() == 2


def test_progress_callback_and_bar(tmp_path, store, capsys) -> None:
    corpus = write_corpus(tmp_path / "c", n_files=3)
    seen: list[int] = []
    ingest(corpus, store, HashEmbedder(), **{**KW, "progress": lambda r: seen.append(r.upserted)})
    assert seen == sorted(seen) and seen[-1] == store.count() and len(seen) > 2
    ingest(
        corpus, QdrantStore("d", location=":memory:"), HashEmbedder(), **{**KW, "progress": True}
    )
    assert "ingest" in capsys.readouterr().err


def test_bad_arguments_write_nothing(tmp_path, store) -> None:
    corpus = write_corpus(tmp_path / "c", n_files=1)
    with pytest.raises(ConfigError):
        ingest(corpus, store, HashEmbedder(), tokenizer="regex", chunk_tokens=8, overlap=8)
    with pytest.raises(InvalidInputError):
        ingest(corpus, store, HashEmbedder(), tokenizer="regex", batch_size=0)
    assert not store.exists()


# --- add_texts ----------------------------------------------------------------------------


def test_add_texts(store) -> None:
    emb = HashEmbedder()
    ids = add_texts(store, emb, ["a cat", "a dog", "a cat"], [{"n": 1}, {"n": 2}, {"n": 3}])
    assert ids[0] == ids[2] and ids[0] != ids[1] and store.count() == 2
    assert add_texts(store, emb, ["a dog"]) == [ids[1]] and store.count() == 2
    hit = store.recall(emb.embed_query("a dog"), 1)
    assert hit.ids == [ids[1]] and hit.payloads[0]["text"] == "a dog"
    other = add_texts(store, emb, ["a dog"], [{"source": "s.txt"}])
    assert other != [ids[1]] and store.count() == 3
    with pytest.raises(InvalidInputError):
        add_texts(store, emb, "not a list")
    with pytest.raises(InvalidInputError):
        add_texts(store, emb, ["ok", " "])
    with pytest.raises(InvalidInputError):
        add_texts(store, emb, ["ok"], [{}, {}])


# --- CLI module ---------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qdrant-sift")
    _cmd_ingest.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_ingest_into_edge(tmp_path, monkeypatch, capsys) -> None:
    """The real run(): Edge folder, regex tokenizer, the embedder swapped for a hash one."""
    from qdrant_sift.client import embed

    monkeypatch.setattr(embed, "default_embedder", lambda device=None: HashEmbedder())
    corpus = write_corpus(tmp_path / "c", n_files=4)
    argv = ["ingest", str(corpus), "--collection", "k", "--path", str(tmp_path / "e"),
            "--chunk-tokens", "25", "--overlap", "5", "--tokenizer", "regex", "--no-progress",
            "--optimize"]  # fmt: skip
    args = _parse(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    with EdgeStore(tmp_path / "e", "k") as store:
        n = store.count()
        assert n > 4 and store.dim == DIM
    assert f"collection 'k': {n} points" in out
    assert args.func(args) == 0 and "0 upserted" in capsys.readouterr().out  # a no-op
    args = _parse([*argv[:-1], "--recreate"])
    assert args.func(args) == 0 and f"{n} upserted" in capsys.readouterr().out
    args = _parse(["ingest", str(tmp_path / "nothing.txt"), "--path", str(tmp_path / "e")])
    assert args.func(args) == 1


def test_cli_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, argparse\n"
        "from qdrant_sift.client import _cmd_ingest\n"
        "p = argparse.ArgumentParser(); _cmd_ingest.register(p.add_subparsers())\n"
        "import qdrant_sift.client.ingest, qdrant_sift.client.stores, qdrant_sift.client.embed\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vectors_from_function_embedder(store) -> None:
    from qdrant_sift.client.embed import FunctionEmbedder

    emb = FunctionEmbedder(lambda ts: np.ones((len(ts), DIM)) * np.arange(1, DIM + 1), DIM)
    add_texts(store, emb, ["x"])
    assert store.count() == 1
