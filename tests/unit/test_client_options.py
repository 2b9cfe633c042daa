"""``SiftClient.search`` / ``adapt_and_generate`` take ``options=SelectOptions(...)`` like
``select`` and the rerankers: the same picks as the keywords, every field reaching the reranker
and the store, and a keyword that contradicts ``options`` a ``ConfigError`` before any work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest_finetune import tiny_llama
from conftest_stores import HashEmbedder

from qdrant_sift.client import SiftClient
from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import ConfigError
from qdrant_sift.finetune import TestTimeTuner, TuneConfig
from qdrant_sift.options import DEFAULTS, SelectOptions
from qdrant_sift.reranker import LocalReranker

PROMPT = "What does SIFT pick?"
TEXTS = [f"chunk {i}: " + " ".join(f"w{(i * 5 + j) % 41}" for j in range(10)) for i in range(30)]
FIELDS = ("strategy", "lam", "alpha", "unique", "normalize", "diversity", "seed")
# every field off its default, so a field dropped on the way shows
CUSTOM = SelectOptions(
    strategy="mmr",
    lam=0.37,
    alpha=50.0,
    unique=True,
    diversity=0.8,
    seed=7,
    both_directions=False,
    normalize=False,
)


class _Spy(LocalReranker):
    """A LocalReranker that records the options of each ``select`` call."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.calls: list[dict[str, Any]] = []

    def select(self, query: Any, candidates: Any, n: int, **kwargs: Any) -> Any:
        self.calls.append(_effective(kwargs))
        return super().select(query, candidates, n, **kwargs)


def _effective(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The option values a ``select(**kwargs)`` call means, whichever form it used."""
    base = kwargs.get("options") or DEFAULTS
    return {name: kwargs.get(name, getattr(base, name)) for name in FIELDS}


@pytest.fixture
def store() -> Iterator[QdrantStore]:
    with QdrantStore("docs", location=":memory:") as s:
        yield s


def _client(store: QdrantStore, reranker: Any, tuner: Any = None) -> tuple[SiftClient, list[bool]]:
    client = SiftClient(
        store=store, reranker=reranker, embedder=HashEmbedder(), model=tuner, kernel="recall"
    )
    client.add_texts(TEXTS)
    directions: list[bool] = []
    real_recall = store.recall

    def recall(*args: Any, **kwargs: Any) -> Any:
        directions.append(kwargs["both_directions"])
        return real_recall(*args, **kwargs)

    store.recall = recall  # type: ignore[method-assign]  # recording spy
    return client, directions


def _ids(docs: list[Any]) -> list[Any]:
    return [d.id for d in docs]


def _picks(docs: list[Any]) -> list[tuple[Any, float]]:
    """Ids and posterior variances (which λ changes even where the ids stay)."""
    return [(d.id, round(d.uncertainty, 5)) for d in docs]


@pytest.mark.parametrize(
    "opts",
    [
        SelectOptions(strategy="nearest"),
        SelectOptions(strategy="mmr", diversity=0.9),
        SelectOptions(lam=0.003, unique=True),
        SelectOptions(strategy="random", seed=11),
    ],
    ids=["nearest", "mmr", "sift-unique", "random-seed"],
)
def test_search_options_pick_like_the_keywords(store: QdrantStore, opts: SelectOptions) -> None:
    client, _ = _client(store, LocalReranker(device="cpu"))
    by_options = client.search(PROMPT, n=6, k=20, options=opts)
    keywords = {name: getattr(opts, name) for name in ("strategy", "lam", "unique", "diversity")}
    if opts.seed is None:
        assert _picks(by_options) == _picks(client.search(PROMPT, n=6, k=20, **keywords))
    else:  # search has no seed keyword: the seed must reach the reranker to repeat the picks
        assert _ids(by_options) == _ids(client.search(PROMPT, n=6, k=20, options=opts))
    # and not what the defaults pick: options= must not be ignored
    assert _picks(by_options) != _picks(client.search(PROMPT, n=6, k=20))


def test_search_passes_every_option_to_reranker_and_store(store: QdrantStore) -> None:
    spy = _Spy()
    client, directions = _client(store, spy)
    client.search(PROMPT, n=4, k=20, options=CUSTOM)
    assert spy.calls == [{name: getattr(CUSTOM, name) for name in FIELDS}]
    assert directions == [CUSTOM.both_directions]


def test_adapt_and_generate_passes_every_option(store: QdrantStore) -> None:
    spy = _Spy()
    model, tokenizer = tiny_llama(max_positions=256)
    tuner = TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=4, max_length=64))
    client, directions = _client(store, spy, tuner)
    opts = SelectOptions(strategy="nearest", lam=0.2, unique=True, seed=3, both_directions=False)
    result = client.adapt_and_generate(PROMPT, n=3, k=20, max_new_tokens=4, options=opts)
    assert spy.calls == [{name: getattr(opts, name) for name in FIELDS}]
    assert directions == [False]
    nearest = client.search(PROMPT, n=3, k=20, strategy="nearest", both_directions=False)
    assert _ids(result.documents) == _ids(nearest)


@pytest.mark.parametrize("method", ["search", "adapt_and_generate"])
def test_options_conflicts_fail_before_any_work(store: QdrantStore, method: str) -> None:
    spy = _Spy()
    client, directions = _client(store, spy)
    call = getattr(client, method)
    opts = SelectOptions(strategy="nearest")
    with pytest.raises(ConfigError, match="lam"):
        call(PROMPT, n=3, k=20, lam=0.5, options=opts)
    with pytest.raises(ConfigError, match="both_directions"):
        call(PROMPT, n=3, k=20, both_directions=False, options=opts)
    with pytest.raises(ConfigError, match="SelectOptions"):
        call(PROMPT, n=3, k=20, options={"strategy": "nearest"})
    assert spy.calls == [] and directions == []
    with pytest.raises(ConfigError, match="lam"):  # options are validated like the keywords
        call(PROMPT, n=3, k=20, options=SelectOptions(lam=-1.0))
    # a keyword left at its default value is no conflict (as in select and the rerankers)
    docs = client.search(PROMPT, n=3, k=20, lam=DEFAULTS.lam, options=opts)
    assert _ids(docs) == _ids(client.search(PROMPT, n=3, k=20, strategy="nearest"))
