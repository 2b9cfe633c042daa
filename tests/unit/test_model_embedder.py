"""ModelEmbedder: the language model's last layer as SIFT's kernel embedding (tiny real Llama)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qdrant_sift.errors import ConfigError, InvalidInputError
from qdrant_sift.eval import tiny_model
from qdrant_sift.finetune import ModelEmbedder, TestTimeTuner, TuneConfig

torch.set_num_threads(1)
TEXTS = ["the ship sails at dawn", "a", "court statute section party contract clause " * 3]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_unit_rows_independent_of_batching(pooling: str) -> None:
    model, tok = tiny_model()
    emb = ModelEmbedder(model, tok, pooling=pooling, batch_size=3)
    together = emb.embed_documents(TEXTS)
    assert together.shape == (3, emb.dim) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    alone = np.stack([emb.embed_query(t) for t in TEXTS])  # no padding at all
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_mean_and_last_differ_and_match_a_direct_forward() -> None:
    model, tok = tiny_model()
    ids = torch.tensor([tok(TEXTS[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    mean = ModelEmbedder(model, tok, pooling="mean").embed_query(TEXTS[0])
    last = ModelEmbedder(model, tok, pooling="last").embed_query(TEXTS[0])
    want_mean = hidden.mean(0).numpy()
    want_last = hidden[-1].numpy()
    np.testing.assert_allclose(mean, want_mean / np.linalg.norm(want_mean), atol=1e-5)
    np.testing.assert_allclose(last, want_last / np.linalg.norm(want_last), atol=1e-5)
    assert not np.allclose(mean, last)


def test_kernel_is_the_base_models_even_mid_tuning() -> None:
    model, tok = tiny_model()
    tuner = TestTimeTuner(model, tok, TuneConfig(lora_rank=4, learning_rate=5e-2))
    emb = ModelEmbedder(tuner.model, tuner.tokenizer)
    before = emb.embed_documents(TEXTS)
    with tuner.session():
        tuner.tune([TEXTS[2]] * 3)
        during = emb.embed_documents(TEXTS)  # the adapter has moved, the kernel has not
    np.testing.assert_allclose(before, during, atol=1e-5)


def test_refuses_what_it_cannot_pool() -> None:
    model, tok = tiny_model()
    with pytest.raises(ConfigError, match="pooling"):
        ModelEmbedder(model, tok, pooling="max")
    with pytest.raises(ConfigError, match="hidden size"):
        ModelEmbedder(torch.nn.Linear(2, 2), tok)
    tok.pad_token, tok.eos_token = None, None
    with pytest.raises(ConfigError, match="pad"):
        ModelEmbedder(model, tok)
    model2, tok2 = tiny_model()
    emb = ModelEmbedder(model2, tok2)
    with pytest.raises(InvalidInputError):
        emb.embed_documents("not a list")
    with pytest.raises(InvalidInputError):
        emb.embed_documents([""])


def test_kernel_id_names_pooling_and_weights_not_path_or_adapter() -> None:
    model, tok = tiny_model(seed=0)
    mean = ModelEmbedder(model, tok, pooling="mean")
    assert mean.kernel_id.startswith(f"model-mean:{mean.dim}:")
    assert ModelEmbedder(model, tok, pooling="mean", max_tokens=64).kernel_id == mean.kernel_id
    assert ModelEmbedder(model, tok, pooling="last").kernel_id != mean.kernel_id
    same, _ = tiny_model(seed=0)  # the same weights, another object (and no path)
    assert ModelEmbedder(same, tok).kernel_id == mean.kernel_id
    other, _ = tiny_model(seed=1)
    assert ModelEmbedder(other, tok).kernel_id != mean.kernel_id
    half = ModelEmbedder(same.to(torch.bfloat16), tok).kernel_id  # cast: other weights
    assert half.startswith("model-mean:") and half != mean.kernel_id
    tuner = TestTimeTuner(model, tok, TuneConfig(lora_rank=4, learning_rate=5e-2))
    assert ModelEmbedder(tuner.model, tuner.tokenizer).kernel_id == mean.kernel_id
