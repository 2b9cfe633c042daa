"""The HTTP rerank endpoints on loopback, called by the real client libraries that RAG stacks use.

Cohere v2 ``POST /v2/rerank``: the ``cohere`` SDK (``ClientV2(base_url=...)``), LangChain's
``CohereRerank`` in a ``ContextualCompressionRetriever``, LlamaIndex's Cohere postprocessor,
LiteLLM's ``rerank(model="cohere/...", api_base=...)``.
TEI ``POST /rerank``: LlamaIndex's ``TextEmbeddingInference`` postprocessor and Haystack's
``HuggingFaceTEIRanker`` in a pipeline. A fast hashing embedder stands in for MiniLM (one
slow-marked test uses MiniLM). Every answer is checked against in-process ``rerank()``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from qdrant_sift.client import rerank
from qdrant_sift.client.embed import FunctionEmbedder
from qdrant_sift.eval._setup import hashing_embedder
from qdrant_sift.reranker import LocalReranker, serve
from qdrant_sift.reranker._limits import Limits

TOKEN = "s3cret"
EMBED = hashing_embedder(256)
QUERY = "how do cats keep their fur clean"
DOCS = [
    "Cats groom their fur with their rough tongues every day.",
    "The stock market fell sharply on Monday after the report.",
    "Cats groom their fur with their rough tongues every day.",  # an exact duplicate
    "A cat's tongue has tiny hooks that comb the fur and remove loose hair.",
    "Dogs need regular baths; cats mostly clean themselves.",
    "Paris is the capital of France and sits on the Seine.",
    "Grooming also spreads oils that keep a cat's coat waterproof.",
    "Kittens learn to groom by watching their mother lick their fur.",
    "The recipe calls for two cups of flour and one egg.",
    "Long-haired cats may need brushing to prevent mats in their fur.",
]


def expected(top_n: int | None = None, **kw: Any) -> list[tuple[int, float]]:
    """In-process rerank(): indices and the running minimum of its gains (the wire score)."""
    res = rerank(QUERY, DOCS, top_n, embedder=EMBED, reranker=LocalReranker("cpu"), **kw)
    scores = np.minimum.accumulate([r.relevance_score for r in res]).tolist()
    return [(r.index, s) for r, s in zip(res, scores, strict=True)]


def same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    limits = Limits(max_documents=20, max_document_chars=500, max_message_bytes=16 * 1024)
    handle = serve(port=0, http_port=0, device="cpu", embedder=EMBED, token=TOKEN, limits=limits,
                   metrics_port=0, max_workers=2)  # fmt: skip
    yield handle
    handle.stop(0)


@pytest.fixture(scope="module")
def url(server: Any) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def post(url: str, path: str, body: Any, token: str | None = TOKEN, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=data, headers=headers, timeout=30)


# --- the real clients ------------------------------------------------------------------------


def test_cohere_sdk_client_v2(url: str) -> None:
    import cohere

    client = cohere.ClientV2(api_key=TOKEN, base_url=url)
    got = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=4)
    want = expected(4)
    same([(r.index, r.relevance_score) for r in got.results], want)
    scores = [r.relevance_score for r in got.results]
    assert scores == sorted(scores, reverse=True)  # monotone in selection order
    assert got.id and got.meta is not None and got.meta.billed_units.search_units == 1
    everything = client.rerank(model="m", query=QUERY, documents=DOCS)  # no top_n: all of them
    assert sorted(r.index for r in everything.results) == list(range(len(DOCS)))


def test_cohere_sdk_v1_client_with_documents(url: str) -> None:
    """``cohere.Client`` (v1, ``POST /v1/rerank``) and ``return_documents`` (v1 clients and
    LiteLLM send it): the same picks, each with its text."""
    import cohere

    got = cohere.Client(api_key=TOKEN, base_url=url).rerank(
        model="m", query=QUERY, documents=DOCS, top_n=3, return_documents=True
    )
    same([(r.index, r.relevance_score) for r in got.results], expected(3))
    assert [r.document.text for r in got.results] == [DOCS[r.index] for r in got.results]
    plain = post(url, "/v2/rerank", {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 2})
    assert all("document" not in r for r in plain.json()["results"])
    bad = {"model": "m", "query": QUERY, "documents": DOCS, "return_documents": "yes"}
    assert post(url, "/v2/rerank", bad).status_code == 422


def test_cohere_sdk_wrong_token_is_unauthorized(url: str) -> None:
    import cohere
    from cohere.errors import UnauthorizedError

    with pytest.raises(UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=url).rerank(
            model="m", query=QUERY, documents=DOCS
        )


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic on LiteLLM's own types
def test_litellm_rerank_v2_and_v1(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM's ``rerank(model="cohere/...", api_base=URL)``: ``POST /v2/rerank`` with
    ``return_documents`` (LiteLLM sends it by default); an ``api_base`` ending in ``/v1/rerank``
    switches it to Cohere v1. A wrong key is LiteLLM's ``AuthenticationError``."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import: offline
    litellm = pytest.importorskip("litellm")

    got = litellm.rerank(
        model="cohere/sift", query=QUERY, documents=DOCS, top_n=4, api_base=url, api_key=TOKEN
    )
    same([(r["index"], r["relevance_score"]) for r in got.results], expected(4))
    assert [r["document"]["text"] for r in got.results] == [DOCS[r["index"]] for r in got.results]
    v1 = litellm.rerank(model="cohere/sift", query=QUERY, documents=DOCS, top_n=2,
                        api_base=url + "/v1/rerank", api_key=TOKEN)  # fmt: skip
    same([(r["index"], r["relevance_score"]) for r in v1.results], expected(2))
    with pytest.raises(litellm.AuthenticationError):
        litellm.rerank(model="cohere/sift", query=QUERY, documents=DOCS, api_base=url,
                       api_key="wrong", num_retries=0)  # fmt: skip


def test_langchain_cohere_in_a_compression_retriever(url: str) -> None:
    import cohere
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_cohere import CohereRerank
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Everything(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(DOCS)]

    client = cohere.ClientV2(api_key=TOKEN, base_url=url)
    compressor = CohereRerank(client=client, model="sift", top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=Everything()
    )
    docs = retriever.invoke(QUERY)
    want = expected(3)
    assert [d.metadata["i"] for d in docs] == [i for i, _ in want]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([s for _, s in want])


def test_llamaindex_cohere_postprocessor(url: str) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    nodes = [
        NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)
    ]
    post_ = CohereRerank(top_n=3, model="sift", api_key=TOKEN, base_url=url)
    out = post_.postprocess_nodes(nodes, query_str=QUERY)
    assert [int(n.node.node_id) for n in out] == [i for i, _ in expected(3)]


def test_llamaindex_tei_postprocessor(url: str) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [
        NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)
    ]
    post_ = TextEmbeddingInference(top_n=4, base_url=url, auth_token=f"Bearer {TOKEN}")
    out = post_.postprocess_nodes(nodes, query_str=QUERY)  # it re-sorts by score: order survives
    assert [int(n.node.node_id) for n in out] == [i for i, _ in expected()][:4]


def test_haystack_tei_ranker_in_a_pipeline(url: str) -> None:
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    unique = list(dict.fromkeys(DOCS))  # Haystack drops duplicate documents itself
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=d, meta={"i": i}) for i, d in enumerate(unique)])
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(store, top_k=len(unique)))
    ranker = HuggingFaceTEIRanker(url=url, top_k=3, token=Secret.from_token(TOKEN))
    pipe.add_component("ranker", ranker)
    pipe.connect("retriever.documents", "ranker.documents")
    out = pipe.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})
    ranked = out["ranker"]["documents"]
    sent = [d.content for d in store.bm25_retrieval(QUERY, top_k=len(unique))]
    res = rerank(QUERY, sent, 3, embedder=EMBED, reranker=LocalReranker("cpu"))
    assert [d.content for d in ranked] == [sent[r.index] for r in res]
    scores = [d.score for d in ranked]
    assert scores == sorted(scores, reverse=True)


# --- the wire shapes --------------------------------------------------------------------------


def test_tei_shape_every_text_with_text_and_raw_scores(url: str) -> None:
    body = {"query": QUERY, "texts": DOCS, "return_text": True, "truncate": True,
            "truncation_direction": "Right"}  # fmt: skip
    got = post(url, "/rerank", body).json()
    want = expected()
    same([(g["index"], g["score"]) for g in got], want)
    assert all(g["text"] == DOCS[g["index"]] for g in got) and len(got) == len(DOCS)
    raw = post(url, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    gains = [r.relevance_score for r in rerank(QUERY, DOCS, embedder=EMBED)]
    assert [g["score"] for g in raw] == pytest.approx(gains)  # raw: the pick's own gain


def test_sift_extensions_change_the_selection(url: str) -> None:
    body = {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 6, "strategy": "nearest"}
    got = post(url, "/v2/rerank", body).json()
    assert [r["index"] for r in got["results"]] == [i for i, _ in expected(6, strategy="nearest")]
    body = {**body, "strategy": "sift", "lam": 1.0, "unique": False, "alpha": None}
    got = post(url, "/v2/rerank", body).json()
    want = expected(6, lam=1.0, unique=False)
    assert [r["index"] for r in got["results"]] == [i for i, _ in want]
    assert got["sift"]["strategy"] == "sift" and len(got["sift"]["gains"]) == 6


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff{}", 400, "not valid JSON"),
        # what orjson refuses but the json module reads is read as before: then refused by the
        # field checks (422), never as bad JSON (400)
        (b'{"model": "m", "query": "q", "documents": ["a"], "lam": NaN}', 422, "lam"),
        ('{"model": "m", "query": "q", "documents": []}'.encode("utf-16"), 422, "documents is"),
        (b'{"model": "m", "query": "\\ud800", "documents": []}', 422, "documents is empty"),
        ([1, 2], 422, "JSON object"),
        ({"model": "m", "query": QUERY, "documents": []}, 422, "documents is empty"),
        ({"model": "m", "query": "", "documents": DOCS}, 422, "query must be"),
        ({"model": "m", "query": QUERY, "documents": [1, 2]}, 422, "documents[0] must be a string"),
        ({"model": "m", "query": QUERY, "documents": DOCS, "top_n": 0}, 422, "top_n"),
        ({"model": "m", "query": QUERY, "documents": DOCS, "lam": -1}, 422, "lam"),
        ({"model": "m", "query": QUERY, "documents": DOCS, "rank_fields": ["a"]}, 422,
         "unsupported field(s) rank_fields"),
        ({"model": "m", "query": QUERY, "documents": DOCS, "max_tokens_per_doc": 512}, 422,
         "max_tokens_per_doc=512 cannot be honoured"),
        ({"model": "m", "query": QUERY, "documents": ["x"] * 21}, 413, "max_documents=20"),
        ({"model": "m", "query": QUERY, "documents": ["x" * 501]}, 413, "max_document_chars=500"),
    ],
)  # fmt: skip
def test_cohere_errors(url: str, body: Any, status: int, needle: str) -> None:
    resp = post(url, "/v2/rerank", body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"] and resp.headers["x-request-id"]


def test_tei_errors_keep_the_tei_body(url: str) -> None:
    resp = post(url, "/rerank", {"query": QUERY, "texts": DOCS, "truncate": False})
    assert resp.status_code == 422
    assert resp.json()["error_type"] == "Validation" and "truncate=false" in resp.json()["error"]
    resp = post(url, "/rerank", {"query": QUERY, "texts": DOCS, "truncation_direction": "Left"})
    assert resp.status_code == 422
    resp = post(url, "/rerank", {"query": QUERY, "texts": ["y"] * 21})
    assert resp.status_code == 413 and resp.headers["x-sift-limit"] == "max_documents"
    assert resp.json()["sift_error"] == "ServerLimitError"


def test_auth_and_oversized_bodies(url: str) -> None:
    body = {"query": QUERY, "texts": DOCS}
    assert post(url, "/rerank", body, token=None).status_code == 401
    resp = post(url, "/rerank", body, token="nope")
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    lower = httpx.post(url + "/rerank", json=body, headers={"authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200  # the scheme is case-insensitive, as over gRPC
    huge = {"query": QUERY, "texts": ["z" * 400] * 50}  # ~20 kB > max_message_bytes
    resp = post(url, "/rerank", huge)
    assert resp.status_code == 413 and resp.headers["x-sift-limit"] == "max_message_bytes"
    assert post(url, "/rerank", huge, token="nope").status_code == 401  # auth first


def test_health_ready_and_metrics(server: Any, url: str) -> None:
    assert httpx.get(url + "/health").json() == {"status": "ok"}  # open, no token
    assert httpx.get(url + "/ready").status_code == 200
    docs = [f"metrics document {i} about cats" for i in range(5)]
    for _ in range(2):  # the second call finds every document in the cache
        resp = post(url, "/v2/rerank", {"model": "m", "query": "cats", "documents": docs})
        assert resp.status_code == 200
    assert resp.json()["sift"]["cache_hits"] == 5 and resp.json()["sift"]["embedded"] == 0
    assert post(url, "/v2/rerank", {"query": "cats"}, token="bad").status_code == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        text = r.read().decode()
    assert 'qdrant_sift_embed_cache_hits_total{kind="document"}' in text
    assert 'qdrant_sift_rpc_requests_total{code="OK",method="/v2/rerank"}' in text
    assert 'qdrant_sift_http_responses_total{path="/v2/rerank",status="401"}' in text


def test_small_responses_do_not_wait_for_a_delayed_ack(url: str) -> None:
    """With Nagle on the server's sockets each response stalled ~40 ms (header and body are two
    writes and the client delays its ACK); TCP_NODELAY makes a probe take about a millisecond."""
    with httpx.Client() as client:
        client.get(url + "/health")
        lat = []
        for _ in range(15):
            started = time.perf_counter()
            client.get(url + "/health")
            lat.append(time.perf_counter() - started)
    assert float(np.median(lat)) < 0.025


# --- deadlines and shutdown ------------------------------------------------------------------


class SlowEmbedder:
    """The hashing embedder, but every call waits on ``gate`` (or ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.gate, self.entered = delay, threading.Event(), threading.Event()
        self.inner = FunctionEmbedder(lambda t: EMBED.embed_documents(t), EMBED.dim)

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_documents(self, texts: Any) -> np.ndarray:
        if texts == ["warm up"]:  # the server's own warm-up at start
            return self.inner.embed_documents(texts)
        self.entered.set()
        if self.delay:
            time.sleep(self.delay)
        else:
            assert self.gate.wait(30)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def test_deadline_is_504_and_counted() -> None:
    with serve(port=0, http_port=0, device="cpu", embedder=SlowEmbedder(delay=0.3)) as handle:
        base = f"http://127.0.0.1:{handle.http_port}"
        body = {"model": "m", "query": "late", "documents": ["a b", "c d"]}
        resp = post(base, "/v2/rerank", body, token=None, **{"X-Request-Timeout": "0.1"})
        assert resp.status_code == 504 and "deadline" in resp.json()["message"]
        assert (
            post(base, "/v2/rerank", body, token=None, **{"X-Request-Timeout": "x"}).status_code
            == 422
        )


def test_stop_drains_running_requests_and_refuses_new_ones() -> None:
    slow = SlowEmbedder()
    handle = serve(port=0, http_port=0, device="cpu", embedder=slow)
    base = f"http://127.0.0.1:{handle.http_port}"
    body = {"query": "drain", "texts": ["one two", "three four"]}
    result: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: result.update(r=post(base, "/rerank", body, None)))
    caller.start()
    assert slow.entered.wait(10)
    stopper = threading.Thread(target=handle.stop, args=(10,))
    stopper.start()
    deadline = time.monotonic() + 10
    while httpx.get(base + "/ready").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(base + "/ready").status_code == 503
    assert post(base, "/rerank", body, None).status_code == 503  # refused while draining
    slow.gate.set()
    caller.join(10)
    stopper.join(15)
    assert result["r"].status_code == 200 and len(result["r"].json()) == 2
    assert not stopper.is_alive()


def test_overload_is_429_and_a_hung_up_client_is_cancelled_and_logged() -> None:
    import io

    from qdrant_sift.reranker._metrics import configure_json_logging

    stream = io.StringIO()
    configure_json_logging("info", stream)
    slow = SlowEmbedder()
    handle = serve(port=0, http_port=0, device="cpu", embedder=slow, max_concurrent_rpcs=1,
                   metrics_port=0)  # fmt: skip
    base = f"http://127.0.0.1:{handle.http_port}"
    body = {"query": "hang up", "texts": ["one two", "three four"]}
    try:

        def hang_up() -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(base + "/rerank", json=body, timeout=1.0,
                           headers={"x-request-id": "gone"})  # fmt: skip

        caller = threading.Thread(target=hang_up)
        caller.start()
        assert slow.entered.wait(10)
        busy = post(base, "/rerank", body, None)  # the one slot is taken
        assert busy.status_code == 429 and busy.json()["error_type"] == "Overloaded"
        caller.join(10)  # the client gave up and closed its connection
        time.sleep(0.3)  # the server notices within its 0.1 s poll
        slow.gate.set()  # the embedding returns; the call stops before selecting
        deadline = time.monotonic() + 10
        record: dict[str, Any] = {}
        while not record and time.monotonic() < deadline:
            for line in stream.getvalue().splitlines():
                rec = json.loads(line)
                if rec.get("msg") == "http" and rec.get("request_id") == "gone":
                    record = rec
            time.sleep(0.05)
        assert record["code"] == "CANCELLED" and record["method"] == "/rerank"
        with urllib.request.urlopen(f"http://127.0.0.1:{handle.metrics_port}/metrics") as r:
            text = r.read().decode()
        assert 'qdrant_sift_rpc_requests_total{code="RESOURCE_EXHAUSTED",method="/rerank"}' in text
    finally:
        slow.gate.set()
        handle.stop(0)
        logger = logging.getLogger("qdrant_sift")  # undo configure_json_logging for later tests
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_cached_calls_do_not_wait_behind_a_cold_one() -> None:
    slow = SlowEmbedder()
    handle = serve(port=0, http_port=0, device="cpu", embedder=slow)
    base = f"http://127.0.0.1:{handle.http_port}"
    warm = {"query": "warm", "texts": ["cached one", "cached two", "cached three"]}
    try:
        slow.gate.set()
        assert post(base, "/rerank", warm, None).status_code == 200  # now cached
        slow.gate.clear()
        slow.entered.clear()
        cold = threading.Thread(
            target=post, args=(base, "/rerank", {"query": "cold", "texts": ["new text"]}, None)
        )
        cold.start()
        assert slow.entered.wait(10)  # the cold call holds the embedder
        started = time.perf_counter()
        again = post(base, "/rerank", warm, None)
        assert again.status_code == 200 and time.perf_counter() - started < 5
        slow.gate.set()
        cold.join(10)
    finally:
        slow.gate.set()
        handle.stop(0)


def test_tls_with_the_grpc_certificate(tmp_path: Any) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a throwaway certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with serve(port=0, http_port=0, device="cpu", embedder=EMBED, tls_cert=cert, tls_key=key,
               token=TOKEN) as handle:  # fmt: skip
        base = f"https://127.0.0.1:{handle.http_port}"
        body = {"query": QUERY, "texts": DOCS}
        import ssl

        trust = ssl.create_default_context(cafile=str(cert))
        resp = httpx.post(base + "/rerank", json=body, verify=trust,
                          headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert [r["index"] for r in resp.json()] == [i for i, _ in expected()]
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{handle.http_port}/rerank", json=body, timeout=3)


# --- the warm path runs on the event loop -----------------------------------------------------


class ThreadRecorder:
    """Wraps the server's selector and records the thread each selection runs on."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.threads = inner, []

    def select(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return self.inner.select(*args, **kwargs)


def _metric(handle: Any, line: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{handle.metrics_port}/metrics") as r:
        text = r.read().decode()
    found = [x for x in text.splitlines() if x.startswith(line + " ")]
    return float(found[0].split()[-1]) if found else 0.0


def test_warm_calls_run_on_the_event_loop_and_cold_ones_in_a_worker() -> None:
    handle = serve(port=0, http_port=0, device="cpu", embedder=EMBED, metrics_port=0)
    base = f"http://127.0.0.1:{handle.http_port}"
    recorder = ThreadRecorder(handle.http.engine._selector)
    handle.http.engine._selector = recorder
    body = {"query": QUERY, "texts": DOCS}
    query_hits = 'qdrant_sift_embed_cache_hits_total{kind="query"}'
    doc_hits = 'qdrant_sift_embed_cache_hits_total{kind="document"}'
    try:
        cold = post(base, "/rerank", body, None)
        assert cold.status_code == 200
        # the cold call was tried inline first, gave up before counting anything, then embedded
        assert _metric(handle, query_hits) == 0 and _metric(handle, doc_hits) == 0
        warm = post(base, "/rerank", body, None)
        assert warm.status_code == 200 and warm.json() == cold.json()
        assert _metric(handle, query_hits) == 1 and _metric(handle, doc_hits) == len(DOCS)
        assert recorder.threads[0].startswith("sift-http-work")  # embedding: off the loop
        assert recorder.threads[1] == "sift-http"  # cached: on the loop, no thread hop
        # a deadline holds on the loop too (it passed before the work started)
        late = post(base, "/rerank", body, None, **{"X-Request-Timeout": "1e-9"})
        assert late.status_code == 504 and len(recorder.threads) == 2
    finally:
        handle.stop(0)


def test_cached_but_big_selections_stay_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_sift.reranker import _http

    handle = serve(port=0, http_port=0, device="cpu", embedder=EMBED)
    base = f"http://127.0.0.1:{handle.http_port}"
    recorder = ThreadRecorder(handle.http.engine._selector)
    handle.http.engine._selector = recorder
    body = {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 3}
    try:
        assert post(base, "/v2/rerank", body, None).status_code == 200  # cold
        monkeypatch.setattr(_http, "INLINE_MAX_COST", 1)  # every selection is "big" now
        resp = post(base, "/v2/rerank", body, None)
        assert resp.status_code == 200
        same([(r["index"], r["relevance_score"]) for r in resp.json()["results"]], expected(3))
        assert all(t.startswith("sift-http-work") for t in recorder.threads)
        monkeypatch.setattr(_http, "INLINE_MAX_BODY", 10)  # and every body too big
        monkeypatch.setattr(_http, "INLINE_MAX_COST", 10**12)
        assert post(base, "/v2/rerank", body, None).status_code == 200
        assert recorder.threads[-1].startswith("sift-http-work")
    finally:
        handle.stop(0)


class OnCuda:
    """A CPU selector that says it runs on CUDA (what the HTTP server asks before inlining)."""

    def __init__(self) -> None:
        self.inner = LocalReranker("cpu")
        self.device = torch.device("cuda")
        self.threads: list[str] = []

    def select(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return self.inner.select(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_warm_calls_stay_off_the_loop_when_selecting_on_cuda() -> None:
    selector = OnCuda()
    handle = serve(port=0, http_port=0, device="cpu", embedder=EMBED, selector=selector)
    base = f"http://127.0.0.1:{handle.http_port}"
    try:
        for _ in range(2):  # cold, then warm
            assert post(base, "/rerank", {"query": QUERY, "texts": DOCS}, None).status_code == 200
        served = selector.threads[-2:]  # serve() selects once itself at start, to warm up
        assert len(served) == 2 and all(t.startswith("sift-http-work") for t in served)
    finally:
        handle.stop(0)
