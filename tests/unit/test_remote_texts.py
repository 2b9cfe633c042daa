"""``RemoteReranker.rerank_texts`` against the in-process ``TextReranker``: one contract.

A server on loopback and an in-process ``TextReranker`` share the embedder, the selector and the
limits. For the same call both must return a ``TextOutcome`` with the same picks (scores equal up
to the wire's float32), and for bad input raise the same :mod:`qdrant_sift.errors` class (and
the same ``limit`` for a server limit), whether the client catches the mistake before sending
or the server refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest_texts import CASES, DOCS, QUERY
from prometheus_client import CollectorRegistry

from qdrant_sift import errors
from qdrant_sift.eval._setup import hashing_embedder
from qdrant_sift.reranker import LocalReranker, RemoteReranker, serve
from qdrant_sift.reranker._limits import Limits
from qdrant_sift.reranker._text import TextOutcome, TextReranker

TOKEN = "remote-texts"
EMBED = hashing_embedder(96)
LIMITS = Limits(max_documents=12, max_document_chars=300, max_n=20)


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteReranker]:
    handle = serve(port=0, device="cpu", embedder=EMBED, token=TOKEN, limits=LIMITS)
    try:
        with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", token=TOKEN, retries=0) as client:
            yield client
    finally:
        handle.stop(0)


@pytest.fixture(scope="module")
def local() -> TextReranker:
    return TextReranker(LocalReranker("cpu"), LIMITS, CollectorRegistry(), EMBED)


def _same(a: TextOutcome, b: TextOutcome) -> None:
    assert type(a) is type(b) is TextOutcome
    assert [p.index for p in a.picks] == [p.index for p in b.picks]
    for name in ("relevance_score", "gain", "variance"):
        got = [getattr(p, name) for p in b.picks]
        assert got == pytest.approx([getattr(p, name) for p in a.picks], rel=1e-5, abs=1e-7)
    assert b.prior_variance == pytest.approx(a.prior_variance, rel=1e-6)
    assert (a.stopped_early, a.strategy) == (b.stopped_early, b.strategy)


@pytest.mark.parametrize(("n", "options"), CASES)
def test_remote_and_in_process_pick_the_same(
    remote: RemoteReranker, local: TextReranker, n: int | None, options: dict[str, Any]
) -> None:
    want = local.rerank(QUERY, DOCS, n, **options)
    got = remote.rerank_texts(QUERY, DOCS, n, **options)
    _same(want, got)
    assert len(got.picks) == (len(DOCS) if n is None or n > len(DOCS) else n) or got.stopped_early


def test_cache_counts_come_back(remote: RemoteReranker) -> None:
    docs = [f"a fresh text number {i} about rings" for i in range(4)]
    first = remote.rerank_texts("rings", docs, 2)
    again = remote.rerank_texts("rings", docs, 2)
    assert (first.embedded, first.cache_hits, first.stored_hits) == (4, 0, 0)
    assert (again.embedded, again.cache_hits) == (0, 4)
    assert [p.index for p in first.picks] == [p.index for p in again.picks]


LONG = "x" * 301
BAD: list[tuple[str, Callable[[Any], Any]]] = [
    ("empty query", lambda f: f("", DOCS)),
    ("blank query", lambda f: f("   ", DOCS)),
    ("query not str", lambda f: f(None, DOCS)),
    ("documents a str", lambda f: f(QUERY, "one text")),
    ("no documents", lambda f: f(QUERY, [])),
    ("document not str", lambda f: f(QUERY, ["ok", 3])),
    ("n zero", lambda f: f(QUERY, DOCS, 0)),
    ("n negative", lambda f: f(QUERY, DOCS, -2)),
    ("n bool", lambda f: f(QUERY, DOCS, True)),
    ("n float", lambda f: f(QUERY, DOCS, 2.0)),
    ("strategy unknown", lambda f: f(QUERY, DOCS, 2, strategy="bogus")),
    ("lam negative", lambda f: f(QUERY, DOCS, 2, lam=-1.0)),
    ("lam nan", lambda f: f(QUERY, DOCS, 2, lam=math.nan)),
    ("alpha zero", lambda f: f(QUERY, DOCS, 2, alpha=0.0)),
    ("diversity > 1", lambda f: f(QUERY, DOCS, 2, strategy="mmr", diversity=2.0)),
    ("unique not bool", lambda f: f(QUERY, DOCS, 2, unique="yes")),
    # the server's limits (the client cannot know them): refused by the server
    ("too many documents", lambda f: f(QUERY, ["x"] * 13)),
    ("document too long", lambda f: f(QUERY, ["ok", LONG])),
    ("query too long", lambda f: f(LONG, DOCS)),
    ("n over max_n with repeats", lambda f: f(QUERY, DOCS, 21, unique=False)),
    ("n far over max_n", lambda f: f(QUERY, DOCS, 2**40, unique=False)),
]


@pytest.mark.parametrize(("name", "call"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_the_same_class(
    remote: RemoteReranker, local: TextReranker, name: str, call: Callable[[Any], Any]
) -> None:
    with pytest.raises(errors.QdrantSiftError) as want:
        call(local.rerank)
    with pytest.raises(errors.QdrantSiftError) as got:
        call(remote.rerank_texts)
    assert type(got.value) is type(want.value), (got.value, want.value)
    assert getattr(got.value, "limit", None) == getattr(want.value, "limit", None)
    assert isinstance(got.value, errors.InvalidInputError)  # a ValueError, as in-process


def test_limits_are_the_servers_not_the_clients(remote: RemoteReranker) -> None:
    """The client pre-checks only what no server accepts: 12 documents pass here because the
    server allows 12, and the answer for 13 names the server's limit."""
    assert len(remote.rerank_texts(QUERY, [f"doc {i}" for i in range(12)], 2).picks) == 2
    with pytest.raises(errors.ServerLimitError, match="max_documents=12") as info:
        remote.rerank_texts(QUERY, [f"doc {i}" for i in range(13)], 2)
    assert info.value.limit == "max_documents"


def test_wrong_token_is_a_remote_error(remote: RemoteReranker) -> None:
    with (
        RemoteReranker(remote.target, token="nope", retries=0) as other,
        pytest.raises(errors.RemoteRerankerError) as info,
    ):
        other.rerank_texts(QUERY, DOCS, 2)
    assert info.value.code == "UNAUTHENTICATED"
