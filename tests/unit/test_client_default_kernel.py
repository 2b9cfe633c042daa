"""The product defaults the evaluation chose (docs/eval: the development sweep, then the second
confirmatory set): SIFT in the language model's own kernel (model-mean) at λ = 0.03, N = 20
picks; ``kernel="recall"`` keeps the old selection on the recall vectors; the *default* kernel
falls back to recall (a warning, once) where it cannot apply, a kernel named explicitly raises.
Real parts: Qdrant local mode, in-process SIFT, a tiny random Llama; the recall embedder is a
deterministic hash."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from conftest_finetune import tiny_llama
from conftest_stores import HashEmbedder

from qdrant_sift.client import SiftClient
from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import ConfigError
from qdrant_sift.options import DEFAULTS
from qdrant_sift.reranker import LocalReranker

PROMPT = "What does SIFT pick?"
TEXTS = [f"chunk {i}: " + " ".join(f"w{(i * 7 + j) % 53}" for j in range(12)) for i in range(24)]
K, N = 24, 5


@pytest.fixture(scope="module")
def tuner() -> Any:
    from qdrant_sift.finetune import TestTimeTuner, TuneConfig

    model, tokenizer = tiny_llama(max_positions=256)
    return TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=4, max_length=64))


@pytest.fixture
def store() -> Iterator[QdrantStore]:
    with QdrantStore("docs", location=":memory:") as s:
        yield s


def _ids(docs: Sequence[Any]) -> list[Any]:
    return [d.id for d in docs]


def _recall_picks(store: QdrantStore) -> list[Any]:
    query = HashEmbedder().embed_query(PROMPT)
    cands = store.recall(query, K)
    sel = LocalReranker(device="cpu").select(query, cands.vectors, N)
    return [cands.ids[i] for i in sel.indices]


def test_the_defaults_are_the_swept_ones() -> None:
    assert DEFAULTS.lam == 0.03
    params = inspect.signature(SiftClient.adapt_and_generate).parameters
    assert params["n"].default == 20 and params["lam"].default == 0.03
    assert inspect.signature(SiftClient).parameters["kernel"].default is None


def test_default_client_selects_in_the_model_kernel(tuner: Any, store: QdrantStore) -> None:
    from qdrant_sift.finetune import ModelEmbedder

    client = SiftClient(store=store, embedder=HashEmbedder(), model=tuner,
                        reranker=LocalReranker(device="cpu"))  # fmt: skip
    client.add_texts(TEXTS)
    assert store.kernel_dim == tuner.model.config.hidden_size  # a new collection stores it
    picks = client.search(PROMPT, n=N, k=K)
    emb = ModelEmbedder(tuner.model, tuner.tokenizer, pooling="mean")
    cands = store.recall(HashEmbedder().embed_query(PROMPT), K)
    ref = LocalReranker(device="cpu").select(
        emb.embed_query(PROMPT), emb.embed_documents([p["text"] for p in cands.payloads]), N
    )
    assert _ids(picks) == [cands.ids[i] for i in ref.indices]
    np.testing.assert_allclose([d.uncertainty for d in picks], ref.variances, rtol=1e-4)
    # kernel="recall" on the same collection: the old picks, SIFT on the recall vectors
    recall = SiftClient(store=store, embedder=HashEmbedder(), model=tuner, kernel="recall",
                        reranker=LocalReranker(device="cpu"))  # fmt: skip
    assert _ids(recall.search(PROMPT, n=N, k=K)) == _recall_picks(store)


def test_default_kernel_on_a_plain_collection_computes_it_from_texts(
    tuner: Any, store: QdrantStore
) -> None:
    from qdrant_sift.client.ingest import add_texts

    add_texts(store, HashEmbedder(), TEXTS)  # no kernel vectors stored
    assert store.kernel_dim is None
    default = SiftClient(store=store, embedder=HashEmbedder(), model=tuner)
    explicit = SiftClient(store=store, embedder=HashEmbedder(), model=tuner, kernel="model-mean")
    assert _ids(default.search(PROMPT, n=N, k=K)) == _ids(explicit.search(PROMPT, n=N, k=K))


def _textless(store: QdrantStore) -> None:
    """A plain collection whose points carry no text to compute a kernel from."""
    store.create(HashEmbedder().dim)
    store.upsert(list(range(1, len(TEXTS) + 1)), HashEmbedder().embed_documents(TEXTS),
                 [{"n": i} for i in range(len(TEXTS))])  # fmt: skip


def test_default_kernel_falls_back_to_recall_without_texts(
    tuner: Any, store: QdrantStore, caplog: pytest.LogCaptureFixture
) -> None:
    _textless(store)
    client = SiftClient(store=store, embedder=HashEmbedder(), model=tuner,
                        reranker=LocalReranker(device="cpu"))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="qdrant_sift.client._kernel"):
        first = client.search(PROMPT, n=N, k=K)
        second = client.search(PROMPT, n=N, k=K)
    assert _ids(first) == _ids(second) == _recall_picks(store)
    warnings = [r for r in caplog.records if "default kernel" in r.getMessage()]
    assert len(warnings) == 1 and "no text under payload key 'text'" in warnings[0].getMessage()
    assert "kernel='recall'" in warnings[0].getMessage()


def test_explicit_kernel_still_raises_without_texts(tuner: Any, store: QdrantStore) -> None:
    _textless(store)
    for kernel in ("model-mean", "model-last"):
        client = SiftClient(store=store, embedder=HashEmbedder(), model=tuner, kernel=kernel)
        with pytest.raises(ConfigError, match="no text under payload key 'text'"):
            client.search(PROMPT, n=N, k=K)


class _PlainTuner:
    """A ``Tuner`` without a transformers model: nothing to take a model kernel from."""

    def __init__(self) -> None:
        from qdrant_sift.finetune import TuneConfig

        self.config = TuneConfig()

    def check_prompt(
        self, prompt: str, *, max_new_tokens: int = 64, chat_template: bool = True
    ) -> int:
        return 1

    def adapt(self, texts: Sequence[str], prompt: str, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_default_kernel_falls_back_for_a_tuner_without_a_model(
    store: QdrantStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = SiftClient(store=store, embedder=HashEmbedder(), model=_PlainTuner(),
                        reranker=LocalReranker(device="cpu"))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="qdrant_sift.client._kernel"):
        client.add_texts(TEXTS)
        assert store.kernel_dim is None  # nothing to store: a plain collection
        assert _ids(client.search(PROMPT, n=N, k=K)) == _recall_picks(store)
    assert sum("default kernel" in r.getMessage() for r in caplog.records) == 1
    named = SiftClient(
        store=store, embedder=HashEmbedder(), model=_PlainTuner(), kernel="model-mean"
    )
    with pytest.raises(ConfigError, match="no model and tokenizer"):
        named.search(PROMPT, n=N, k=K)


def test_kernel_names_are_checked_at_once() -> None:
    with pytest.raises(ConfigError, match="kernel must be one of"):
        SiftClient(kernel="minilm")
    with pytest.raises(ConfigError, match="not both"):
        SiftClient(kernel="recall", kernel_embedder=HashEmbedder())
    assert SiftClient(kernel="recall")._kernel is None
    assert SiftClient()._kernel is not None and SiftClient()._kernel.fallback
    assert not SiftClient(kernel="model-mean")._kernel.fallback


# --- the command line -------------------------------------------------------------------------


def _parse(argv: list[str]) -> Any:
    from qdrant_sift.client.cli import build_parser

    return build_parser().parse_args(argv)


def test_cli_defaults_and_kernel_choices(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("generate", "demo"):
        argv = [command, PROMPT] if command == "generate" else [command]
        args = _parse(argv)
        assert args.n == 20 and args.kernel is None  # None: SiftClient's default, model-mean
        for kernel in ("model-mean", "model-last", "recall"):
            assert _parse([*argv, "--kernel", kernel]).kernel == kernel
        with pytest.raises(SystemExit) as exc:
            _parse([*argv, "--kernel", "minilm"])
        assert exc.value.code == 2
    assert _parse(["generate", PROMPT]).lam == 0.03
    assert _parse(["search", PROMPT, "--kernel", "recall"]).kernel == "recall"
    capsys.readouterr()


@pytest.mark.parametrize("kernel", [None, "recall", "model-last"])
def test_cli_kernel_reaches_the_client(
    kernel: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import qdrant_sift.client as client_pkg
    from qdrant_sift.client._cmd_common import client_from_args

    seen: dict[str, Any] = {}

    class Spy:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

    monkeypatch.setattr(client_pkg, "SiftClient", Spy)
    extra = [] if kernel is None else ["--kernel", kernel]
    args = _parse(["generate", PROMPT, "--path", str(tmp_path / "edge"), *extra])
    client_from_args(args, model=args.model)
    assert seen["kernel"] == kernel
    seen["store"].close()
