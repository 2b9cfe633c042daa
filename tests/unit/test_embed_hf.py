"""HFEmbedder on a tiny random BERT built from a config (MiniLM's tokenizer files, no download)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qdrant_sift.client.embed import (
    Embedder,
    FunctionEmbedder,
    HFEmbedder,
    default_embedder,
    minilm_path,
)
from qdrant_sift.errors import DimensionMismatchError, InvalidInputError, ModelLoadError

HIDDEN = 32
TEXTS = ["a short one", "a much longer sentence with many more words in it than the first", "x"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).eval().save_pretrained(folder)
    src = minilm_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{src}/{name}", folder / name)
    return str(folder)


@pytest.fixture(scope="module")
def embedder(tiny_bert) -> HFEmbedder:
    return HFEmbedder(tiny_bert, device="cpu", batch_size=2)


def test_shapes_types_and_unit_norm(embedder) -> None:
    assert isinstance(embedder, Embedder) and embedder.dim == HIDDEN
    out = embedder.embed_documents(TEXTS)
    assert out.shape == (3, HIDDEN) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query(TEXTS[1]), out[1], atol=1e-5)
    assert embedder.embed_documents([]).shape == (0, HIDDEN)


def test_mean_pooling_ignores_padding(embedder, tiny_bert) -> None:
    """Each text alone (no padding), pooled by hand, equals its row in a padded batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    batch = HFEmbedder(tiny_bert, device="cpu", batch_size=8).embed_documents(TEXTS)
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
        ref = hidden.mean(0).numpy()
        np.testing.assert_allclose(batch[i], ref / np.linalg.norm(ref), atol=1e-5)


def test_batch_size_does_not_change_results(embedder, tiny_bert) -> None:
    big = HFEmbedder(tiny_bert, device="cpu", batch_size=64).embed_documents(TEXTS * 3)
    np.testing.assert_allclose(embedder.embed_documents(TEXTS * 3), big, atol=1e-5)


def test_truncation_and_unnormalised(tiny_bert) -> None:
    short = HFEmbedder(tiny_bert, device="cpu", max_length=8, normalize=False)
    out = short.embed_documents(["word " * 500, "word " * 7])
    assert out.shape == (2, HIDDEN) and not np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_errors(embedder, tmp_path) -> None:
    with pytest.raises(InvalidInputError):
        embedder.embed_documents("one string")
    with pytest.raises(InvalidInputError):
        embedder.embed_documents(["ok", 3])
    with pytest.raises(InvalidInputError):
        embedder.embed_query(["list"])
    with pytest.raises(ModelLoadError):
        HFEmbedder(tmp_path / "nothing-here").embed_documents(["x"])
    with pytest.raises(InvalidInputError):
        HFEmbedder("x", batch_size=0)


def test_default_is_minilm_and_lazy() -> None:
    default_embedder.cache_clear()  # another test in this process may have used (loaded) it
    emb = default_embedder()
    assert emb is default_embedder()  # shared per process
    assert emb.dim == 384 and emb._model is None  # dim came from config.json, no weights loaded


def test_function_embedder_checks_shape() -> None:
    good = FunctionEmbedder(lambda ts: np.ones((len(ts), 4)), 4, normalize=True)
    np.testing.assert_allclose(good.embed_query("a"), np.full(4, 0.5))
    bad = FunctionEmbedder(lambda ts: np.ones((len(ts), 3)), 4)
    with pytest.raises(DimensionMismatchError):
        bad.embed_documents(["a"])


def test_tiny_bert_end_to_end_through_edge(embedder, tmp_path) -> None:
    from qdrant_sift.client.ingest import add_texts
    from qdrant_sift.client.stores import EdgeStore

    with EdgeStore(tmp_path) as store:
        ids = add_texts(store, embedder, TEXTS)
        cand = store.recall(embedder.embed_query(TEXTS[1]), 3)
        assert cand.ids[0] == ids[1] and cand.scores[0] == pytest.approx(1.0, abs=1e-5)
