"""Issue 14: the collection stays in sync with its sources, on every backend that runs here
(qdrant-client local mode in memory and on disk, embedded Qdrant Edge).

Stable source ids (a moved corpus costs zero writes), per-source replacement (new chunks first,
stale ones after: a crash or a kill -9 in between leaves old and new findable and the rerun
converges), cleanup none/incremental/full, unchanged sources never re-embedded, legacy
collections refused with the way out, and a randomized sequence of edits, deletes, moves and
crashes that must always end equal to a fresh ingest (same ids, same payloads).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest_stores import DIM, HERE, HashEmbedder, StoreFactory, open_from_spec, write_corpus

from qdrant_sift.client.embed import FunctionEmbedder
from qdrant_sift.client.ingest import add_texts, chunk_id, ingest, migrate_ids
from qdrant_sift.client.stores import EdgeStore, QdrantStore, VectorStore
from qdrant_sift.errors import ConfigError, IngestError, LegacyIdsError

KW: dict[str, Any] = dict(tokenizer="regex", chunk_tokens=20, overlap=4, batch_size=6,
                          progress=False)  # fmt: skip


class CountingEmbedder(HashEmbedder):
    """A HashEmbedder that also counts the texts it embedded."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__(dim)
        self.texts = 0

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().embed_documents(texts)


class Spy:
    """Counts upsert/delete calls on one store instance (points, not calls)."""

    def __init__(self, store: VectorStore) -> None:
        self.upserted = self.deleted = 0
        up, de = store.upsert, store.delete

        def upsert(ids: Any, *a: Any, **k: Any) -> None:
            self.upserted += len(ids)
            up(ids, *a, **k)

        def delete(ids: Any) -> None:
            self.deleted += len(ids)
            de(ids)

        store.upsert, store.delete = upsert, delete  # type: ignore[method-assign]


def snapshot(store: VectorStore) -> dict[str, dict[str, Any]]:
    return {str(p.id): p.payload for p in store.scroll()}


def fresh(corpus: Path, **kw: Any) -> dict[str, dict[str, Any]]:
    """What a clean ingest of ``corpus`` stores (ids and payloads are backend-independent)."""
    with QdrantStore("fresh", location=":memory:") as clean:
        ingest(corpus, clean, HashEmbedder(), **{**KW, **kw})
        return snapshot(clean)


def edit(path: Path, seed: int) -> None:
    words = path.read_text().split()
    rng = random.Random(seed)
    words[rng.randrange(len(words))] = f"edited{seed}"
    path.write_text(" ".join(words) + "\n")


@pytest.fixture(params=["memory", "local", "edge"])
def store_factory(request, tmp_path) -> StoreFactory:
    kind = request.param
    if kind == "memory":
        return StoreFactory(
            kind, lambda collection="c": QdrantStore(collection, location=":memory:"), False
        )
    if kind == "local":
        path = str(tmp_path / "local")
        return StoreFactory(kind, lambda collection="c": QdrantStore(collection, path=path), True,
                            {"kind": "qdrant", "path": path, "collection": "c"})  # fmt: skip
    path = str(tmp_path / "edge")
    return StoreFactory(kind, lambda collection="c": EdgeStore(path, collection), True,
                        {"kind": "edge", "path": path, "collection": "c"})  # fmt: skip


class TestSync:
    def test_scroll_filter_and_payload_keys_agree(self, store_factory) -> None:
        """The two store additions ingest's scan relies on, the same on every backend."""
        with store_factory.open() as store:
            store.create(DIM)
            store.upsert([1, 2, 3], np.eye(3, DIM) + 0.1, [
                {"source_id": "a", "text": "x" * 1000, "n": 1},
                {"source_id": "b", "text": "y", "n": 2},
                {"source_id": "a", "n": 3},
            ])  # fmt: skip
            store.index_payload(("source_id", "source_hash"))
            store.index_payload(("source_id",))  # again: a no-op
            got = [(p.id, p.payload) for p in store.scroll(payload_keys=("source_id", "n"))]
            assert got == [(1, {"source_id": "a", "n": 1}), (2, {"source_id": "b", "n": 2}),
                           (3, {"source_id": "a", "n": 3})]  # fmt: skip
            assert [p.id for p in store.scroll(filter={"source_id": "a"}, batch_size=1)] == [1, 3]

    def test_edit_replaces_and_nothing_else_is_embedded(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "c", n_files=6)
        emb = CountingEmbedder()
        with store_factory.open() as store:
            first = ingest(corpus, store, emb, **KW)
            assert emb.texts == first.chunks == store.count()
            target = corpus / "a" / "doc001.txt"
            old = {
                p.payload["text"] for p in store.scroll() if p.payload["source"] == "a/doc001.txt"
            }
            edit(target, 1)
            emb.texts = 0
            report = ingest(corpus, store, emb, **KW)
            assert report.sources_changed == 1 and report.sources_unchanged == 5
            # only the chunks around the edit are embedded; the rest keep their vectors
            assert 0 < emb.texts == report.embedded <= 2 and report.chunks_deleted == emb.texts
            new = {
                p.payload["text"] for p in store.scroll() if p.payload["source"] == "a/doc001.txt"
            }
            assert any("edited1" in t for t in new) and not any("edited1" in t for t in old)
            assert old - new and not (old - new) & {p.payload["text"] for p in store.scroll()}
            assert snapshot(store) == fresh(corpus)  # old chunks gone, nothing stale
            hit = store.recall(emb.embed_query(next(iter(new - old))), 1)
            assert hit.scores[0] == pytest.approx(1.0, abs=1e-5)  # the new chunk's own vector
            emb.texts = 0
            again = ingest(corpus, store, emb, **KW)
            assert emb.texts == 0 and again.upserted == again.chunks_deleted == 0

    def test_cleanup_modes(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "c", n_files=4)
        with store_factory.open() as store:
            ingest(corpus, store, HashEmbedder(), **KW)
            (corpus / "b" / "doc000.txt").unlink()
            ingest(corpus, store, HashEmbedder(), **KW)  # incremental keeps vanished sources
            assert "b/doc000.txt" in {p.payload["source_id"] for p in store.scroll()}
            edit(corpus / "a" / "doc001.txt", 2)
            n = store.count()
            none = ingest(corpus, store, HashEmbedder(), **{**KW, "cleanup": None})
            assert none.chunks_deleted == 0 and store.count() == n + none.embedded > n
            dry = ingest(corpus, store, HashEmbedder(), **{**KW, "cleanup": "full"}, dry_run=True)
            assert dry.planned["deleted"] == ["b/doc000.txt"] and store.count() == n + none.embedded
            full = ingest(corpus, store, HashEmbedder(), **{**KW, "cleanup": "full"})
            assert full.sources_deleted == 1 and full.chunks_deleted == dry.chunks_deleted
            assert snapshot(store) == fresh(corpus)
            with pytest.raises(ConfigError):
                ingest(corpus, store, HashEmbedder(), **{**KW, "cleanup": "sometimes"})

    def test_moved_corpus_costs_zero_writes(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "here" / "corpus", n_files=5)
        with store_factory.open() as store:
            ingest(corpus, store, HashEmbedder(), **KW)
            before = snapshot(store)
            moved = tmp_path / "elsewhere" / "renamed"
            moved.parent.mkdir()
            shutil.move(corpus, moved)
            spy, emb = Spy(store), CountingEmbedder()
            report = ingest(moved, store, emb, **{**KW, "cleanup": "full"})
            assert spy.upserted == spy.deleted == emb.texts == 0
            assert report.sources_unchanged == 5 and snapshot(store) == before

    def test_two_roots_do_not_delete_each_other(self, store_factory, tmp_path) -> None:
        a = write_corpus(tmp_path / "a", n_files=3, seed=1)
        b = write_corpus(tmp_path / "b", n_files=3, seed=2)  # the same relative paths as a
        with store_factory.open() as store:
            ingest(a, store, HashEmbedder(), source_id="kb-a", **KW)
            ingest(b, store, HashEmbedder(), source_id="kb-b", **KW)
            both = snapshot(store)
            ingest(a, store, HashEmbedder(), source_id="kb-a", **KW)
            (b / "a" / "doc001.txt").unlink()
            ingest(b, store, HashEmbedder(), source_id="kb-b", cleanup="full", **{
                k: v for k, v in KW.items()})  # fmt: skip
            ids = {p.payload["source_id"] for p in store.scroll()}
            assert {"kb-a/a/doc001.txt", "kb-a/b/doc000.txt"} <= ids
            assert "kb-b/a/doc001.txt" not in ids and "kb-b/b/doc000.txt" in ids
            assert len(both) > store.count()

    def test_crash_between_write_and_delete_converges(self, store_factory, tmp_path) -> None:
        """Fault injection: the delete phase fails after the new chunks were written."""
        corpus = write_corpus(tmp_path / "c", n_files=4)
        with store_factory.open() as store:
            ingest(corpus, store, HashEmbedder(), **KW)
            old = {p.payload["text"] for p in store.scroll()}
            target = corpus / "b" / "doc002.txt"
            target.write_text("a completely new text for this file, nothing like before\n")
            real_delete = store.delete

            def crash(ids: Any) -> None:
                raise IngestError("injected: the process died before deleting")

            store.delete = crash  # type: ignore[method-assign]
            with pytest.raises(IngestError, match="injected"):
                ingest(corpus, store, HashEmbedder(), **KW)
            store.delete = real_delete  # type: ignore[method-assign]
            texts = {p.payload["text"] for p in store.scroll()}
            assert old <= texts  # the old version is still findable ...
            assert any("completely new" in t for t in texts)  # ... and so is the new one
            emb = CountingEmbedder()
            report = ingest(corpus, store, emb, **KW)
            assert emb.texts == 0 and report.chunks_deleted > 0  # nothing re-embedded
            assert snapshot(store) == fresh(corpus)

    def test_kill_between_write_and_delete_converges(self, store_factory, tmp_path) -> None:
        """kill -9 of a real ingest process right after its write phase, before any delete."""
        if not store_factory.persistent:
            pytest.skip(f"{store_factory.kind} cannot be shared with a subprocess")
        corpus = write_corpus(tmp_path / "c", n_files=6)
        spec = store_factory.spec
        with open_from_spec(spec, spec["collection"]) as store:
            ingest(corpus, store, HashEmbedder(), **KW)
            old = {p.payload["text"] for p in store.scroll()}
        for f in (corpus / "a" / "doc001.txt", corpus / "b" / "doc004.txt"):
            f.write_text(f"rewritten {f.name} with other words entirely\n" * 3)
        marker = tmp_path / "marker"
        code = textwrap.dedent(
            f"""
            import json, os, signal, sys
            from pathlib import Path
            sys.path.insert(0, {str(HERE)!r})
            from conftest_stores import HashEmbedder, open_from_spec
            from qdrant_sift.client.ingest import ingest
            store = open_from_spec(json.loads({json.dumps(spec)!r}), {spec["collection"]!r})
            def die(ids):
                Path({str(marker)!r}).write_text(str(store.count()))
                os.kill(os.getpid(), signal.SIGKILL)
            store.delete = die
            ingest([{str(corpus)!r}], store, HashEmbedder({DIM}), **{KW!r})
            """
        )
        child = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        assert marker.exists()  # it died in the delete phase, after writing
        with open_from_spec(spec, spec["collection"]) as store:
            texts = {p.payload["text"] for p in store.scroll()}
            assert old <= texts and any(t.startswith("rewritten") for t in texts)
            emb = CountingEmbedder()
            ingest(corpus, store, emb, **KW)
            assert emb.texts == 0
            assert snapshot(store) == fresh(corpus)

    @pytest.mark.parametrize("seed", [0, 1])
    def test_any_sequence_ends_equal_to_a_fresh_ingest(self, store_factory, tmp_path, seed):
        """Edits, deletes, new files, moves and crashes, in random order: after every
        completed ``full`` ingest the collection equals a fresh ingest (ids and payloads)."""
        rng = random.Random(seed)
        corpus = write_corpus(tmp_path / "c0", n_files=5, words=60, seed=seed)
        with store_factory.open() as store:
            ingest(corpus, store, HashEmbedder(), cleanup="full", **KW)
            for step in range(8):
                files = sorted(corpus.rglob("*.txt"))
                action = rng.choice(["edit", "edit", "delete", "add", "move", "crash"])
                if action == "edit" and files:
                    edit(rng.choice(files), 100 * seed + step)
                elif action == "delete" and len(files) > 1:
                    rng.choice(files).unlink()
                elif action == "add":
                    (corpus / f"new{step}.md").write_text(f"# New {step}\n\n" + "words " * 40)
                elif action == "move":
                    moved = tmp_path / f"c{step + 1}"
                    shutil.move(corpus, moved)
                    corpus = moved
                elif action == "crash" and files:
                    edit(rng.choice(files), 1000 + step)
                    real = store.delete
                    store.delete = lambda ids: (_ for _ in ()).throw(IngestError("crash"))  # type: ignore[method-assign]
                    with pytest.raises(IngestError):
                        ingest(corpus, store, HashEmbedder(), cleanup="full", **KW)
                    store.delete = real  # type: ignore[method-assign]
                ingest(corpus, store, HashEmbedder(), cleanup="full", **KW)
                assert snapshot(store) == fresh(corpus), (step, action)

    def test_legacy_collection_is_refused_then_migrated(self, store_factory, tmp_path) -> None:
        from qdrant_sift.client._sync import legacy_chunk_id

        corpus = write_corpus(tmp_path / "c", n_files=3)
        fresh_ids = fresh(corpus)
        with store_factory.open() as store:
            # what the first id scheme wrote: absolute paths, no source_hash
            store.create(DIM)
            emb = HashEmbedder()
            for p in fresh_ids.values():
                src = str(corpus.resolve() / p["source"])
                store.upsert(
                    [legacy_chunk_id(src, p["chunk_index"], p["text"])],
                    emb.embed_documents([p["text"]]),
                    [{"text": p["text"], "source": src, "chunk_index": p["chunk_index"]}],
                )
            n = store.count()
            with pytest.raises(LegacyIdsError, match="migrate-ids") as err:
                ingest(corpus, store, emb, **KW)
            assert "--recreate" in str(err.value) and store.count() == n  # nothing written
            with pytest.raises(IngestError, match="migrate-ids"):
                add_texts(store, emb, ["x"])
            with pytest.raises(IngestError, match="outside"):
                migrate_ids(store, [tmp_path / "elsewhere"])
            report = migrate_ids(store, [corpus])
            assert report.migrated == n and store.count() == n
            counting = CountingEmbedder()
            again = ingest(corpus, store, counting, **KW)
            assert counting.texts == 0 and again.reused == n  # vectors kept, payloads rewritten
            assert snapshot(store) == fresh_ids

    def test_kernel_collection_replaces_too(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "c", n_files=3)
        kernel = FunctionEmbedder(
            lambda ts: np.array([[t.count(c) + 1.0 for c in "w012"] for t in ts]), 4
        )
        kw = {**KW, "kernel_embedder": kernel}
        with store_factory.open(collection="k") as store:
            ingest(corpus, store, HashEmbedder(), **kw)
            edit(corpus / "a" / "doc001.txt", 7)
            report = ingest(corpus, store, HashEmbedder(), **kw)
            assert report.sources_changed == 1 and report.reused == 0  # kernel: re-embedded
            assert snapshot(store) == fresh(corpus)
            cand = store.recall(np.ones(DIM), 100, with_kernel=True)
            assert cand.kernel_vectors is not None and len(cand) == store.count()

    def test_add_texts_with_ids_replaces(self, store_factory) -> None:
        emb = CountingEmbedder()
        with store_factory.open() as store:
            ids = add_texts(store, emb, ["first text", "second"], ids=["doc-1", "doc-2"])
            assert ids[0] == chunk_id("doc-1", 0, "first text") and store.count() == 2
            again = add_texts(store, emb, ["first text", "second"], ids=["doc-1", "doc-2"])
            assert again == ids and emb.texts == 2
            add_texts(store, emb, ["first text, edited"], ids=["doc-1"])
            texts = sorted(p.payload["text"] for p in store.scroll())
            assert texts == ["first text, edited", "second"] and emb.texts == 3


# --- readers (content, not extension) ------------------------------------------------------


def _pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        content = len(objs) + 2
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} "
                    "0 R /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont "
                    "/Helvetica >> >> >> >>")  # fmt: skip
        kids.append(f"{len(objs)} 0 R")
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_mixed_folder_every_format_and_every_skip_reason(tmp_path) -> None:
    root = tmp_path / "mixed"
    (root / "docs").mkdir(parents=True)
    (root / "LICENSE").write_text("Permission is hereby granted, free of charge, to any person")
    (root / "COPYING").write_bytes(b"\xef\xbb\xbfGNU GENERAL PUBLIC LICENSE with a BOM")
    (root / "docs" / "index.html").write_text(
        "<!DOCTYPE html><html><head><title>The Guide</title><style>p{color:red}</style>"
        "<script>var x = 'never';</script></head><body><h1>Install</h1><p>Run <b>pip</b> "
        "&amp; enjoy.</p><ul><li>one</li><li>two</li></ul></body></html>"
    )
    (root / "page").write_text("<html><body><p>an HTML file without extension</p></body></html>")
    (root / "guide.md").write_text("# Guide Title\n\nSome markdown body text.")
    (root / "main.go").write_text('package main\n\nfunc main() { println("hi") }\n')
    (root / "lib.rs").write_text("fn add(a: i32, b: i32) -> i32 { a + b }\n")
    (root / "paper.pdf").write_bytes(_pdf(["Page one talks about SIFT", "Page two about Qdrant"]))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg bytes")
    (root / "blob").write_bytes(b"\x7fELF\x00\x00\x01binary")
    (root / "latin1.txt").write_bytes(b"caf\xe9")
    (root / "skip-me.log").write_text("excluded by glob")
    with QdrantStore("m", location=":memory:") as store:
        report = ingest(root, store, HashEmbedder(), exclude=["*.log"], **KW)
        by_source: dict[str, list[dict]] = {}
        for p in store.scroll():
            by_source.setdefault(p.payload["source_id"], []).append(p.payload)
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(by_source) == {"LICENSE", "COPYING", "docs/index.html", "page", "guide.md",
                              "main.go", "lib.rs", "paper.pdf"}  # fmt: skip
    assert reasons["photo.jpg"] == "unsupported type .jpg (binary format)"
    assert reasons["blob"] == "binary (contains NUL bytes)"
    assert reasons["latin1.txt"].startswith("not UTF-8")
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert "skip-me.log" not in reasons and len(reasons) == 4
    html = by_source["docs/index.html"][0]
    assert html["reader"] == "html" and html["title"] == "The Guide"
    assert "never" not in html["text"] and "color" not in html["text"]
    assert "# Install" in html["text"] and "Run pip & enjoy." in html["text"]
    assert html["headings"] == ["Install"]
    assert "- one" in html["text"]
    assert by_source["page"][0]["reader"] == "html"
    assert by_source["COPYING"][0]["text"].startswith("GNU")  # the BOM is stripped
    assert by_source["guide.md"][0]["title"] == "Guide Title"
    assert by_source["guide.md"][0]["headings"] == ["Guide Title"]
    assert (
        by_source["main.go"][0]["language"] == "go" and by_source["lib.rs"][0]["reader"] == "code"
    )
    pages = sorted((p["page"], p["text"]) for p in by_source["paper.pdf"])
    assert pages == [(1, "Page one talks about SIFT"), (2, "Page two about Qdrant")]
    assert all(p["source"] == "paper.pdf" for p in by_source["paper.pdf"])
    assert "reader" in by_source["LICENSE"][0] and by_source["LICENSE"][0]["reader"] == "text"


@pytest.mark.skipif(not Path("/usr/share/common-licenses").is_dir(), reason="no such folder")
def test_common_licenses_are_ingested() -> None:
    """The issue's new-user case: every file there was skipped as 'unsupported type (none)'."""
    root = Path("/usr/share/common-licenses")
    files = {os.path.realpath(f) for f in root.iterdir() if f.is_file()}
    with QdrantStore("l", location=":memory:") as store:
        report = ingest(root, store, HashEmbedder(), **{**KW, "chunk_tokens": 200, "overlap": 20,
                                                           "batch_size": 256})  # fmt: skip
        sources = {p.payload["source_id"] for p in store.scroll()}
    assert report.skipped == [] and report.files_read == len(files) == len(sources)
    assert "GPL-3" in sources and "GPL" not in sources  # the file, not the link to it


def test_heading_path_per_chunk(tmp_path) -> None:
    doc = tmp_path / "manual.md"
    doc.write_text(
        "# Manual\n\nintro words here\n\n## Install\n\n" + "install words " * 12
        + "\n\n```\n# not a heading\n```\n\n### On Linux\n\n" + "linux words " * 12
        + "\n\n## Use\n\n" + "use words " * 12
    )  # fmt: skip
    with QdrantStore("h", location=":memory:") as store:
        ingest(doc, store, HashEmbedder(), **{**KW, "overlap": 0})
        paths = {tuple(p.payload.get("headings", ())) for p in store.scroll()}
    assert ("Manual", "Install", "On Linux") in paths and ("Manual", "Use") in paths
    assert not any("not a heading" in h for path in paths for h in path)


def test_include_and_single_file_ids(tmp_path) -> None:
    corpus = write_corpus(tmp_path / "c", n_files=4)
    with QdrantStore("i", location=":memory:") as store:
        ingest(corpus, store, HashEmbedder(), include=["a/*"], **KW)
        assert {p.payload["source_id"] for p in store.scroll()} == {"a/doc001.txt", "a/doc003.txt"}
        ingest(corpus / "b" / "doc000.txt", store, HashEmbedder(), source_id="manual", **KW)
        assert "manual" in {p.payload["source_id"] for p in store.scroll()}
        ingest(corpus, store, HashEmbedder(), include=["b/*"], cleanup="full", **KW)
        ids = {p.payload["source_id"] for p in store.scroll()}
        assert {"a/doc001.txt", "b/doc000.txt", "manual"} <= ids  # not in this run's scope
        (corpus / "a" / "doc003.txt").unlink()
        ingest(corpus, store, HashEmbedder(), exclude=["b/*"], cleanup="full", **KW)
        ids = {p.payload["source_id"] for p in store.scroll()}
        assert "a/doc003.txt" not in ids and "b/doc002.txt" in ids


# --- CLI ------------------------------------------------------------------------------------


def test_cli_json_dry_run_cleanup_and_migrate(tmp_path, monkeypatch, capsys) -> None:
    from qdrant_sift.client import embed
    from qdrant_sift.client.cli import main

    monkeypatch.setattr(embed, "default_embedder", lambda device=None: HashEmbedder())
    corpus = write_corpus(tmp_path / "c", n_files=3)
    base = ["ingest", str(corpus), "--path", str(tmp_path / "e"), "--collection", "k",
            "--tokenizer", "regex", "--chunk-tokens", "20", "--overlap", "4",
            "--no-progress"]  # fmt: skip
    assert main([*base, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["sources_added"] == 3 and first["points"] == first["upserted"] > 3
    (corpus / "a" / "doc001.txt").unlink()
    assert main([*base, "--cleanup", "full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "deleted a/doc001.txt" in out and "dry run" in out
    assert main([*base, "--cleanup", "full", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sources_deleted"] == 1 and report["points"] < first["points"]
    assert main([*base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upserted"] == 0  # a no-op
    assert main([*base, "--recreate", "--dry-run", "--json"]) == 0  # drops nothing
    kept = json.loads(capsys.readouterr().out)
    assert kept["points"] == report["points"] and kept["sources_unchanged"] == 2
    assert main(["migrate-ids", "--root", str(corpus), "--path", str(tmp_path / "e"),
                 "--collection", "k"]) == 0  # fmt: skip
    assert "0 points re-keyed" in capsys.readouterr().out


def test_pdf_without_the_extra_names_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "paper.pdf").write_bytes(_pdf(["some text"]))
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if the pdf extra were not installed
    with QdrantStore("p", location=":memory:") as store:
        report = ingest(tmp_path, store, HashEmbedder(), **KW)
    assert report.skipped == [(str(tmp_path / "paper.pdf"), report.skipped[0][1])]
    assert "pip install 'qdrant-sift[pdf]'" in report.skipped[0][1]


def test_sift_client_add_texts_forwards_ids() -> None:
    from qdrant_sift.client import SiftClient

    with QdrantStore("s", location=":memory:") as store:
        client = SiftClient(store=store, embedder=HashEmbedder(), kernel="recall")
        client.add_texts(["v1"], ids=["note"])
        client.add_texts(["v2"], ids=["note"])
        assert [p.payload["text"] for p in store.scroll()] == ["v2"]
