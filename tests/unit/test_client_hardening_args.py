"""Issue 12 item 7: every argument of ``SiftClient.adapt_and_generate`` is validated before any
work (no embedding, recall, selection, model load or LoRA step), with a typed error.

Before: ``max_new_tokens`` was checked only after all LoRA steps ran, and a string gave a bare
``TypeError``. The table below must name every parameter of the signature, so a new parameter
without a check fails this test.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from conftest_finetune import tiny_llama
from conftest_stores import HashEmbedder

from qdrant_sift.client import SiftClient
from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import ConfigError, InvalidInputError
from qdrant_sift.finetune import TestTimeTuner, TuneConfig
from qdrant_sift.options import SelectOptions
from qdrant_sift.reranker import LocalReranker

PROMPT = "What does SIFT pick?"
TEXTS = [f"chunk {i}: " + " ".join(f"w{(i * 7 + j) % 53}" for j in range(12)) for i in range(20)]

#: parameter -> bad values and the error each must raise.
BAD: dict[str, list[tuple[Any, type[Exception]]]] = {
    "prompt": [("", InvalidInputError), ("   ", InvalidInputError), (None, InvalidInputError),
               (b"bytes", InvalidInputError), (3, InvalidInputError)],
    "k": [(0, ConfigError), (-1, ConfigError), ("200", ConfigError), (2.5, ConfigError),
          (True, ConfigError), (None, ConfigError)],
    "n": [(-1, InvalidInputError), ("3", InvalidInputError), (1.5, InvalidInputError),
          (True, InvalidInputError), (None, InvalidInputError)],
    "lam": [(0, ConfigError), (-0.1, ConfigError), (float("nan"), ConfigError),
            (float("inf"), ConfigError), ("0.01", ConfigError), (None, ConfigError)],
    "alpha": [(0, ConfigError), (-1.0, ConfigError), (float("nan"), ConfigError),
              ("1", ConfigError)],
    "strategy": [("best", ConfigError), ("", ConfigError), (None, ConfigError),
                 ("SIFT", ConfigError)],
    "filter": [("source == 1", InvalidInputError), (42, InvalidInputError),
               ([("source", 1)], InvalidInputError)],
    "unique": [("yes", ConfigError), (1, ConfigError), (None, ConfigError)],
    "diversity": [(-0.1, ConfigError), (1.5, ConfigError), (float("nan"), ConfigError),
                  ("0.5", ConfigError)],
    "both_directions": [("no", ConfigError), (0, ConfigError), (None, ConfigError)],
    "max_new_tokens": [(0, InvalidInputError), (-5, InvalidInputError),
                       ("8", InvalidInputError), (8.0, InvalidInputError),
                       (True, InvalidInputError), (None, InvalidInputError)],
    "progress": [("print", InvalidInputError), (3, InvalidInputError)],
    "options": [({"strategy": "nearest"}, ConfigError), ("nearest", ConfigError),
                (SelectOptions(lam=-1.0), ConfigError),
                (SelectOptions(strategy="best"), ConfigError),
                (SelectOptions(both_directions=None), ConfigError),  # type: ignore[arg-type]
                (SelectOptions(seed="1"), ConfigError),  # type: ignore[arg-type]
                (SelectOptions(normalize="no"), ConfigError)],  # type: ignore[arg-type]
    "generation_kwargs": [({"temperature": 0.0, "do_sample": True}, ConfigError),
                          ({"top_p": 1.5, "do_sample": True}, ConfigError),
                          ({"top_k": -1, "do_sample": True}, ConfigError),
                          ({"num_beams": 0}, ConfigError),
                          ({"do_sample": "yes"}, ConfigError),
                          ({"max_length": 50}, ConfigError),
                          ({"num_return_sequences": 2}, ConfigError),
                          ({"min_new_tokens": 20}, ConfigError),  # > max_new_tokens=8
                          ({"repetition_penalty": 0}, ConfigError),
                          ({"chat_template": "yes"}, ConfigError),
                          ({"not_a_generation_arg": 1}, ConfigError)],
}  # fmt: skip

CASES = [(name, value, err) for name, bads in BAD.items() for value, err in bads]


def test_the_table_covers_every_parameter() -> None:
    params = set(inspect.signature(SiftClient.adapt_and_generate).parameters) - {"self"}
    assert params == set(BAD), "add bad values for the new parameter(s) to BAD"


class _Spy:
    """Counts every call into the parts that do work."""

    def __init__(self) -> None:
        self.embeds = self.selects = self.tunes = 0


@pytest.fixture(scope="module")
def parts() -> tuple[SiftClient, _Spy, TestTimeTuner]:
    model, tokenizer = tiny_llama(max_positions=256)
    tuner = TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=4, max_length=64))
    spy = _Spy()
    embedder = HashEmbedder()
    reranker = LocalReranker(device="cpu")
    store = QdrantStore("docs", location=":memory:")
    client = SiftClient(store=store, reranker=reranker, embedder=embedder, model=tuner)
    client.add_texts(TEXTS)

    real_embed, real_select, real_tune = embedder.embed_query, reranker.select, tuner.tune

    def embed(*a: Any, **kw: Any) -> Any:
        spy.embeds += 1
        return real_embed(*a, **kw)

    def select(*a: Any, **kw: Any) -> Any:
        spy.selects += 1
        return real_select(*a, **kw)

    def tune(*a: Any, **kw: Any) -> Any:
        spy.tunes += 1
        return real_tune(*a, **kw)

    embedder.embed_query = embed  # type: ignore[method-assign]  # counting spy
    reranker.select = select  # type: ignore[method-assign]  # counting spy
    tuner.tune = tune  # type: ignore[method-assign]  # counting spy
    return client, spy, tuner


def _call(client: SiftClient, name: str, value: Any) -> Any:
    kwargs: dict[str, Any] = {"n": 3, "k": 10, "max_new_tokens": 8}
    prompt = PROMPT
    if name == "prompt":
        prompt = value
    elif name == "generation_kwargs":
        kwargs.update(value)
    else:
        kwargs[name] = value
    return client.adapt_and_generate(prompt, **kwargs)


@pytest.mark.parametrize(("name", "value", "error"), CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_bad_argument_fails_before_any_work(
    parts: tuple[SiftClient, _Spy, TestTimeTuner], name: str, value: Any, error: type[Exception]
) -> None:
    client, spy, tuner = parts
    before = (spy.embeds, spy.selects, spy.tunes)
    with pytest.raises(error) as info:
        _call(client, name, value)
    assert (spy.embeds, spy.selects, spy.tunes) == before, "work started before validation"
    assert not isinstance(info.value, TypeError) or isinstance(info.value, InvalidInputError)
    assert tuner.base_unchanged()


def test_good_arguments_still_run(parts: tuple[SiftClient, _Spy, TestTimeTuner]) -> None:
    client, spy, _ = parts
    result = client.adapt_and_generate(
        PROMPT, n=2, k=10, max_new_tokens=4, filter={"source": ""}, do_sample=False,
        num_beams=1, chat_template=True,
    )  # fmt: skip
    assert result.steps == 2 and spy.tunes >= 1


def test_bad_arguments_never_load_the_model(tmp_path: Any) -> None:
    """Validation comes before the (lazy) model load: a missing model is never even tried."""
    with QdrantStore("docs", location=":memory:") as store:
        client = SiftClient(
            store=store, embedder=HashEmbedder(), model=str(tmp_path / "no-such-model")
        )
        for name in ("max_new_tokens", "n", "lam", "progress"):
            with pytest.raises(InvalidInputError):
                _call(client, name, BAD[name][0][0])
        assert client._tuner is None
        with pytest.raises(InvalidInputError):
            client.generate(PROMPT, max_new_tokens="8")  # type: ignore[arg-type]
        assert client._tuner is None
