"""The deploy/ stack end to end on a real Docker engine: build, up, ingest, Recall, down.

What an operator does after reading deploy/README.md, in one test module: build the CPU
reranker and ingest images, start Qdrant and the reranker (``--wait`` means the image's gRPC
HEALTHCHECK passed), run the collection-init and ingest jobs on a small corpus, then call the
reranker over gRPC with the token: ``Recall`` with the vector of a stored chunk must pick that
chunk first, ``Select`` must answer, a call without the token must be refused, metrics must
be served. ``down -v`` removes everything, also on failure. Skipped where no engine runs
(tests/docker/conftest.py says why). The first run builds images: allow ~10-20 minutes.
"""

from __future__ import annotations

import importlib.util
import itertools
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(2400)

REPO = Path(__file__).resolve().parents[2]
TOKEN_META = "authorization"
TOPICS = [
    ("tides", "The moon's gravity raises two bulges of ocean water; coasts see two tides a day."),
    ("bread", "Yeast ferments sugars in dough, releasing carbon dioxide that makes bread rise."),
    ("chess", "Castling moves the king two squares toward a rook, which jumps to the other side."),
    ("volcano", "Basaltic lava is runny and builds shield volcanoes with gentle slopes."),
    ("compilers", "A register allocator maps unlimited virtual registers onto a few real ones."),
    ("bees", "Honey bees dance in a figure of eight to point hive mates toward flowers."),
    ("glaciers", "Glaciers carve U-shaped valleys as ice grinds rock beneath its weight."),
    ("jazz", "A ii-V-I progression underpins countless jazz standards and their solos."),
    ("vaccines", "Vaccines train the immune system with a harmless piece of a pathogen."),
    ("tcp", "TCP's three-way handshake exchanges SYN, SYN-ACK and ACK before data flows."),
    ("orbits", "Kepler found that planets sweep equal areas of their orbit in equal times."),
    ("tea", "Green tea leaves are steamed or pan-fired soon after picking to stop oxidation."),
]


def _healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("hc", REPO / "deploy" / "healthcheck.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stack(
    make_compose_project: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    corpus = tmp_path_factory.mktemp("corpus")
    for name, sentence in TOPICS:
        body = f"# {name}\n\n{sentence}\n\n" + " ".join([sentence] * 3)
        (corpus / f"{name}.md").write_text(body, encoding="utf-8")
    corpus.chmod(0o755)
    project = make_compose_project(profiles=("cpu", "ingest"), env={"INGEST_DIR": str(corpus)})
    try:
        project.run("build", "reranker-cpu", "ingest", timeout=1800)
        project.run("up", "-d", "--wait", "qdrant", "reranker-cpu", timeout=600)
        init = project.run("run", "--rm", "collection-init", timeout=300)
        assert "collection 'docs'" in init
        project.run("run", "--rm", "--no-deps", "ingest", timeout=900)
    except BaseException:
        print(project.logs())
        raise
    yield project


def _env_file() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (Path(__file__).with_name("compose.test.env")).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


@pytest.fixture(scope="module")
def qdrant(stack: Any) -> Iterator[Any]:
    from qdrant_client import QdrantClient

    client = QdrantClient(
        url=f"http://127.0.0.1:{stack.port('qdrant', 6333)}",
        api_key=_env_file()["QDRANT_API_KEY"],
        check_compatibility=False,
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def reranker(stack: Any) -> Iterator[Any]:
    import grpc

    from qdrant_sift.v1 import reranker_pb2_grpc

    port = stack.port("reranker-cpu", 50051)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    yield port, reranker_pb2_grpc.RerankerStub(channel)
    channel.close()


def _auth() -> list[tuple[str, str]]:
    return [(TOKEN_META, f"Bearer {_env_file()['QDRANT_SIFT_TOKEN']}")]


def _matrix(a: np.ndarray) -> Any:
    from qdrant_sift.v1 import reranker_pb2

    a = np.ascontiguousarray(a, dtype="<f4")
    return reranker_pb2.Matrix(rows=a.shape[0], cols=a.shape[1], data=a.tobytes())


def test_ingest_filled_the_collection(qdrant: Any) -> None:
    info = qdrant.get_collection("docs")
    assert info.config.params.vectors.size == 384
    assert qdrant.count("docs", exact=True).count >= len(TOPICS)
    points, _ = qdrant.scroll("docs", limit=100, with_payload=True)
    texts = " ".join(str(p.payload) for p in points)
    for name, _ in TOPICS:
        assert name in texts


def test_health_check_script_sees_serving(reranker: tuple[int, Any]) -> None:
    port, _ = reranker
    assert _healthcheck().main(["--port", str(port)]) == 0


def test_recall_over_grpc_picks_the_stored_chunk_first(qdrant: Any, reranker: Any) -> None:
    from qdrant_sift.v1 import reranker_pb2

    _, stub = reranker
    points, _ = qdrant.scroll("docs", limit=5, with_vectors=True, with_payload=True)
    target = points[3]
    vec = np.asarray(target.vector, dtype=np.float32)[None, :]
    req = reranker_pb2.RecallRequest(
        collection="docs", query=_matrix(vec), k=10, n=4, with_payload=True
    )
    resp = stub.Recall(req, metadata=_auth(), timeout=60)
    assert resp.recalled == 10
    assert len(resp.points) == 4
    assert resp.points[0].id == str(target.id)
    variances = [p.variance for p in resp.points]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(variances))
    assert variances[0] < resp.prior_variance
    payload = dict(resp.points[0].payload.items())
    assert payload["text"] == target.payload["text"]


def test_calls_without_the_token_are_refused(reranker: Any) -> None:
    import grpc

    from qdrant_sift.v1 import reranker_pb2

    _, stub = reranker
    rng = np.random.default_rng(0)
    req = reranker_pb2.SelectRequest(
        query=_matrix(rng.normal(size=(1, 384))),
        candidates=_matrix(rng.normal(size=(50, 384))),
        n=5,
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Select(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = stub.Select(req, metadata=_auth(), timeout=30)
    assert len(resp.indices) == 5 and len(set(resp.indices)) == 5


def test_metrics_are_served(stack: Any) -> None:
    port = stack.port("reranker-cpu", 9090)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "# HELP" in body


def test_http_rerank_in_the_image_embeds_and_picks(stack: Any, qdrant: Any) -> None:
    """The image serves Cohere's /v2/rerank with its own offline MiniLM: the stored chunk whose
    text is the query comes first; without the token, 401; /ready is open."""
    import json

    port = stack.port("reranker-cpu", 8080)
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/ready", timeout=10) as resp:
        assert resp.status == 200
    points, _ = qdrant.scroll("docs", limit=20, with_payload=True)
    texts = [str(p.payload["text"]) for p in points]
    body = json.dumps({"model": "sift", "query": texts[2], "documents": texts, "top_n": 3})
    req = urllib.request.Request(
        f"{base}/v2/rerank", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {_env_file()['QDRANT_SIFT_TOKEN']}"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as resp:
        results = json.loads(resp.read())["results"]
    assert results[0]["index"] == 2 and len(results) == 3
    req.remove_header("Authorization")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 401
