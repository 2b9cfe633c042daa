"""Text reranking over gRPC (``RerankTexts``) beside HTTP: one engine, three doors that agree.

* congruence: HTTP ``/v2/rerank``, gRPC ``RerankTexts`` and in-process ``rerank()`` return the
  same order (and scores) for the same inputs, across strategies and options;
* an independent client that uses no generated code: it reads the service's descriptors by
  server reflection (as grpcurl or a Node ``@grpc/proto-loader`` client would from the .proto)
  and builds its messages dynamically; ``Select`` and ``RerankTexts`` both answer it;
* the same limits and auth as HTTP, with the typed error in the trailers;
* stored vectors of an attached collection are reused, matched by content hash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from conftest_texts import CASES, DOCS, QUERY
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qdrant_sift.client import rerank
from qdrant_sift.eval._setup import hashing_embedder
from qdrant_sift.reranker import LocalReranker, serve
from qdrant_sift.reranker._limits import Limits
from qdrant_sift.reranker._matrix import to_matrix
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

TOKEN = "t0k"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
EMBED = hashing_embedder(128)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    limits = Limits(max_documents=10, max_document_chars=300)
    handle = serve(port=0, http_port=0, device="cpu", embedder=EMBED, token=TOKEN, limits=limits)
    yield handle
    handle.stop(0)


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[pb_grpc.RerankerStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.RerankerStub(channel)


def http(server: Any, body: dict[str, Any]) -> httpx.Response:
    url = f"http://127.0.0.1:{server.http_port}/v2/rerank"
    return httpx.post(url, json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


@pytest.mark.parametrize(("top_n", "options"), CASES)
def test_http_grpc_and_in_process_agree(
    server: Any, stub: pb_grpc.RerankerStub, options: dict[str, Any], top_n: int | None
) -> None:
    local = rerank(QUERY, DOCS, top_n, embedder=EMBED, reranker=LocalReranker("cpu"), **options)
    want = [r.index for r in local]
    body = {"model": "m", "query": QUERY, "documents": DOCS, "top_n": top_n, **options}
    got_http = http(server, body).json()
    wire = dict(options)
    if "strategy" in wire:
        wire["strategy"] = {
            "mmr": pb.STRATEGY_MMR,
            "nearest": pb.STRATEGY_NEAREST,
            "random": pb.STRATEGY_RANDOM,
        }[wire["strategy"]]
    req = pb.RerankTextsRequest(query=QUERY, documents=DOCS, **wire)
    if top_n is not None:
        req.top_n = top_n
    got_grpc = stub.RerankTexts(req, metadata=AUTH)
    assert [r["index"] for r in got_http["results"]] == want
    assert [r.index for r in got_grpc.results] == want
    floor = np.minimum.accumulate([r.relevance_score for r in local]).tolist()
    assert [r["relevance_score"] for r in got_http["results"]] == pytest.approx(floor, abs=1e-9)
    assert [r.relevance_score for r in got_grpc.results] == pytest.approx(floor, rel=1e-5, abs=1e-7)
    assert [r.gain for r in got_grpc.results] == pytest.approx(
        [r.relevance_score for r in local], rel=1e-5, abs=1e-7
    )
    assert got_grpc.stopped_early == got_http["sift"]["stopped_early"]


def test_grpc_limits_and_auth_match_http(server: Any, stub: pb_grpc.RerankerStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.RerankTexts(pb.RerankTextsRequest(query=QUERY, documents=DOCS))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    too_many = pb.RerankTextsRequest(query=QUERY, documents=["x"] * 11)
    with pytest.raises(grpc.RpcError) as info:
        stub.RerankTexts(too_many, metadata=AUTH)
    trailers = dict(info.value.trailing_metadata() or ())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        trailers["x-sift-limit"] == "max_documents" and "max_documents=10" in info.value.details()
    )
    assert http(server, {"model": "m", "query": QUERY, "documents": ["x"] * 11}).status_code == 413
    for bad in (pb.RerankTextsRequest(query="", documents=DOCS),
                pb.RerankTextsRequest(query=QUERY, documents=[]),
                pb.RerankTextsRequest(query=QUERY, documents=DOCS, top_n=0),
                pb.RerankTextsRequest(query=QUERY, documents=DOCS, lam=-1.0)):  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            stub.RerankTexts(bad, metadata=AUTH)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert dict(info.value.trailing_metadata())["x-sift-error"] in {
            "InvalidInputError",
            "ConfigError",
        }


def test_cache_counts_over_grpc(stub: pb_grpc.RerankerStub) -> None:
    docs = [f"a fresh text number {i} about rings" for i in range(4)]
    first = stub.RerankTexts(pb.RerankTextsRequest(query="rings", documents=docs), metadata=AUTH)
    again = stub.RerankTexts(pb.RerankTextsRequest(query="rings", documents=docs), metadata=AUTH)
    assert (first.embedded, first.cache_hits) == (4, 0)
    assert (again.embedded, again.cache_hits) == (0, 4)
    assert [r.index for r in first.results] == [r.index for r in again.results]


# --- an independent client: descriptors by reflection, messages built at run time ------------


def _reflected_pool(channel: grpc.Channel) -> descriptor_pool.DescriptorPool:
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    pool = descriptor_pool.DescriptorPool()
    req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="qdrant_sift.v1.Reranker")
    resp = next(refl.ServerReflectionInfo(iter([req]), metadata=AUTH))
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in resp.file_descriptor_response.file_descriptor_proto]  # fmt: skip
    added: set[str] = set()
    while len(added) < len(files):  # dependencies first
        for f in files:
            if f.name not in added and all(d in added for d in f.dependency):
                pool.Add(f)
                added.add(f.name)
    return pool


def test_independent_reflection_client(server: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        pool = _reflected_pool(channel)
        service = pool.FindServiceByName("qdrant_sift.v1.Reranker")
        assert {"Select", "SelectBatch", "Recall", "RerankTexts"} <= set(service.methods_by_name)

        def call(method: str, **fields: Any) -> Any:
            m = service.methods_by_name[method]
            request_cls = message_factory.GetMessageClass(m.input_type)
            response_cls = message_factory.GetMessageClass(m.output_type)
            rpc = channel.unary_unary(
                f"/qdrant_sift.v1.Reranker/{method}",
                request_serializer=lambda msg: msg.SerializeToString(),
                response_deserializer=response_cls.FromString,
            )
            return rpc(request_cls(**fields), metadata=AUTH, timeout=30)

        got = call("RerankTexts", query=QUERY, documents=DOCS, top_n=4)
        want = rerank(QUERY, DOCS, 4, embedder=EMBED)
        assert [r.index for r in got.results] == [r.index for r in want]
        assert type(got).__module__ != pb.__name__  # really not our generated class
        rng = np.random.default_rng(0)
        q, x = rng.standard_normal((1, 8), np.float32), rng.standard_normal((12, 8), np.float32)
        matrix = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("qdrant_sift.v1.Matrix")
        )

        def as_matrix(a: np.ndarray) -> Any:
            return matrix(rows=a.shape[0], cols=a.shape[1], data=a.astype("<f4").tobytes())

        sel = call("Select", query=as_matrix(q), candidates=as_matrix(x), n=5)
        assert list(sel.indices) == LocalReranker("cpu").select(q, x, 5).indices.tolist()
        assert to_matrix(q).data == as_matrix(q).data


# --- stored vectors of an attached collection ------------------------------------------------


def test_stored_vectors_are_reused_by_content_hash(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    from qdrant_sift.client.ingest import add_texts
    from qdrant_sift.client.stores import EdgeStore

    kept = DOCS[:5]  # DOCS[3] repeats DOCS[0]: 4 distinct texts stored
    with EdgeStore(tmp_path, "kb") as store:
        add_texts(store, EMBED, kept)
    handle = serve(port=0, device="cpu", embedder=EMBED, edge_path=tmp_path, rerank_collection="kb")
    try:
        deadline = time.monotonic() + 30
        while len(handle.servicer.text.stored) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(handle.servicer.text.stored) == 4
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            got = pb_grpc.RerankerStub(channel).RerankTexts(
                pb.RerankTextsRequest(query=QUERY, documents=DOCS, top_n=5)
            )
        assert got.stored_hits == 5  # positions 0..4 (two of them the same text)
        assert got.embedded == len(set(DOCS[5:]))  # only the texts the collection lacks
        want = rerank(QUERY, DOCS, 5, embedder=EMBED)
        assert [r.index for r in got.results] == [r.index for r in want]
    finally:
        handle.stop(0)
