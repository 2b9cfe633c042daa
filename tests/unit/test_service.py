"""The gRPC reranker server on loopback (port 0, real grpcio): statuses, limits, auth, TLS, health,
reflection, deadlines, overload, graceful drain, metrics, logs and the generated code."""

from __future__ import annotations

import filecmp
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qdrant_sift import errors
from qdrant_sift.reranker import LocalReranker, RemoteReranker
from qdrant_sift.reranker._limits import Limits
from qdrant_sift.reranker._matrix import to_matrix
from qdrant_sift.reranker._metrics import configure_json_logging
from qdrant_sift.reranker._server import serve
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(7)
X = RNG.standard_normal((40, 16)).astype(np.float32)
Q = RNG.standard_normal((1, 16)).astype(np.float32)
BLOCK_N = 7  # calls with this n wait at the gate


class Gate:
    """Real in-process selector; calls with ``n == BLOCK_N`` wait until released."""

    def __init__(self) -> None:
        self.inner = LocalReranker(device="cpu")
        self.entered = threading.Event()
        self.release = threading.Event()
        self.ns: list[int] = []

    def select(self, query: Any, candidates: Any, n: int, **kw: Any) -> Any:
        self.ns.append(n)
        if n == BLOCK_N:
            self.entered.set()
            assert self.release.wait(30)
        return self.inner.select(query, candidates, n, **kw)

    def select_batch(self, queries: Any, candidates: Any, n: int, **kw: Any) -> Any:
        self.ns.append(n)
        if n == BLOCK_N:
            self.entered.set()
            assert self.release.wait(30)
        return self.inner.select_batch(queries, candidates, n, **kw)


def _request(n: int = 5, query: np.ndarray = Q, cands: np.ndarray = X, **kw: Any) -> Any:
    return pb.SelectRequest(query=to_matrix(query), candidates=to_matrix(cands), n=n, **kw)


def _status(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    limits = Limits(max_k=100, max_d=64, max_n=60, max_m=4, max_batch=3, max_message_bytes=2**20)
    with serve(port=0, limits=limits, max_workers=4, metrics_port=0) as handle:
        yield handle


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[pb_grpc.RerankerStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.RerankerStub(channel)


# --- statuses ------------------------------------------------------------------------------------


def test_select_ok_and_request_id_echoed(stub: pb_grpc.RerankerStub) -> None:
    resp, call = stub.Select.with_call(_request(), metadata=[("x-request-id", "req-42")])
    ref = LocalReranker(device="cpu").select(Q, X, 5)
    assert list(resp.indices) == ref.indices.tolist()
    np.testing.assert_allclose(resp.variances, ref.variances, rtol=1e-5, atol=1e-7)
    assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
    _, call = stub.Select.with_call(_request())
    generated = dict(call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0


@pytest.mark.parametrize(
    ("request_", "needle", "error"),
    [
        (
            pb.SelectRequest(
                query=to_matrix(Q), candidates=pb.Matrix(rows=2, cols=16, data=b"\0" * 12), n=1
            ),
            "rows×cols×4",
            "InvalidInputError",
        ),
        (_request(query=np.full((1, 16), np.nan, np.float32)), "NaN", "NonFiniteError"),
        (
            _request(cands=np.where(np.eye(40, 16) > 0, np.inf, X).astype(np.float32)),
            "infinity",
            "NonFiniteError",
        ),
        (_request(query=Q[:, :8]), "d=8", "DimensionMismatchError"),
        (_request(n=0), "n must be >= 1", "InvalidInputError"),
        (pb.SelectRequest(candidates=to_matrix(X), n=3), "query: empty", "InvalidInputError"),
        (_request(strategy=99), "strategy", "InvalidInputError"),
        (_request(lam=-1.0), "lam", None),
    ],
    ids=["data-length", "nan", "inf", "dim-mismatch", "n-zero", "no-query", "bad-enum", "lam"],
)
def test_invalid_argument(
    stub: pb_grpc.RerankerStub, request_: Any, needle: str, error: str | None
) -> None:
    exc = _status(lambda: stub.Select(request_))
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in exc.details()
    if error is not None:
        assert dict(exc.trailing_metadata())["x-sift-error"] == error


@pytest.mark.parametrize(
    ("request_", "limit"),
    [
        (_request(cands=RNG.standard_normal((101, 16)).astype(np.float32)), "max_k"),
        (_request(query=np.ones((1, 65), np.float32), cands=np.ones((3, 65), np.float32)), "max_d"),
        (_request(n=61), "max_n"),
        (_request(query=np.ones((5, 16), np.float32)), "max_m"),
    ],
)
def test_limits_name_the_limit(stub: pb_grpc.RerankerStub, request_: Any, limit: str) -> None:
    exc = _status(lambda: stub.Select(request_))
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert limit in exc.details()
    assert dict(exc.trailing_metadata())["x-sift-limit"] == limit


def test_batch_limit_and_message_size(stub: pb_grpc.RerankerStub) -> None:
    batch = pb.SelectBatchRequest(requests=[_request()] * 4)
    exc = _status(lambda: stub.SelectBatch(batch))
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT and "max_batch" in exc.details()
    big = np.ones((100, 64 * 50), np.float32)  # 1.3 MB > max_message_bytes = 1 MiB
    exc = _status(lambda: stub.Select(_request(query=big[:1], cands=big)))
    assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_select_batch_mixed_groups_in_order(stub: pb_grpc.RerankerStub) -> None:
    local = LocalReranker(device="cpu")
    other = RNG.standard_normal((30, 16)).astype(np.float32)
    reqs = [
        pb.SelectRequest(query=to_matrix(Q), n=4),  # shared candidates
        _request(n=3, cands=other),
        pb.SelectRequest(query=to_matrix(-Q), n=4, strategy=pb.STRATEGY_NEAREST),
    ]
    resp = stub.SelectBatch(pb.SelectBatchRequest(requests=reqs, shared_candidates=to_matrix(X)))
    want = [
        local.select(Q, X, 4),
        local.select(Q, other, 3),
        local.select(-Q, X, 4, strategy="nearest"),
    ]
    assert [list(r.indices) for r in resp.responses] == [w.indices.tolist() for w in want]
    assert [r.strategy for r in resp.responses] == ["sift", "sift", "nearest"]
    missing = pb.SelectBatchRequest(requests=[pb.SelectRequest(query=to_matrix(Q), n=2)])
    exc = _status(lambda: stub.SelectBatch(missing))
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT and "requests[0]" in exc.details()


def test_recall_without_store_is_failed_precondition(stub: pb_grpc.RerankerStub) -> None:
    req = pb.RecallRequest(collection="docs", query=to_matrix(Q), k=10, n=3)
    exc = _status(lambda: stub.Recall(req))
    assert exc.code() is grpc.StatusCode.FAILED_PRECONDITION and "--qdrant-url" in exc.details()


# --- health, reflection, metrics, logs -----------------------------------------------------------


def test_health_and_reflection(server: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "qdrant_sift.v1.Reranker"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(refl.ServerReflectionInfo(iter([req])))
        names = {s.name for s in resp.list_services_response.service}
        assert {"qdrant_sift.v1.Reranker", "grpc.health.v1.Health"} <= names
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="qdrant_sift.v1.Matrix")
        resp = next(refl.ServerReflectionInfo(iter([req])))
        assert resp.file_descriptor_response.file_descriptor_proto


def test_metrics_scrape(server: Any, stub: pb_grpc.RerankerStub) -> None:
    def scrape() -> str:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def value(text: str, prefix: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    ok = 'qdrant_sift_rpc_requests_total{code="OK",method="Select"}'
    bad = 'qdrant_sift_rpc_errors_total{code="INVALID_ARGUMENT",method="Select"}'
    hist = 'qdrant_sift_rpc_duration_seconds_count{method="Select"}'
    before = scrape()
    stub.Select(_request())
    stub.Select(_request())
    _status(lambda: stub.Select(_request(n=0)))
    after = scrape()
    assert value(after, ok) - value(before, ok) == 2
    assert value(after, bad) - value(before, bad) == 1
    assert value(after, hist) - value(before, hist) == 3
    assert "qdrant_sift_rpc_in_flight 0.0" in after


def test_json_logs_carry_request_ids(stub: pb_grpc.RerankerStub) -> None:
    stream = io.StringIO()
    configure_json_logging("info", stream)
    try:
        stub.Select(_request(), metadata=[("x-request-id", "log-me")])
        _status(lambda: stub.Select(_request(n=0), metadata=[("x-request-id", "bad-one")]))
    finally:
        import logging

        logger = logging.getLogger("qdrant_sift")
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_id = {r.get("request_id"): r for r in records if r["msg"] == "rpc"}
    assert by_id["log-me"]["code"] == "OK" and by_id["log-me"]["k"] == 40
    assert (
        by_id["bad-one"]["code"] == "INVALID_ARGUMENT" and "n must be" in by_id["bad-one"]["error"]
    )


# --- auth and TLS --------------------------------------------------------------------------------


def test_bearer_token_auth() -> None:
    with serve(port=0, token="s3cret") as handle:
        target = f"grpc://127.0.0.1:{handle.port}"
        with RemoteReranker(target, token="s3cret") as ok:
            assert ok.select(Q, X, 3).indices.shape == (3,)
        for token in (None, "wrong", "s3cret "):
            with RemoteReranker(target, token=token) as bad:
                with pytest.raises(errors.RemoteRerankerError) as info:
                    bad.select(Q, X, 3)
                assert info.value.code == "UNAUTHENTICATED"
                assert bad.health() == "SERVING"  # probes need no token
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            exc = _status(lambda: next(refl.ServerReflectionInfo(iter([req]))))
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a throwaway certificate")
    out = tmp_path_factory.mktemp("tls")
    cert, key = out / "cert.pem", out / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    with serve(host="localhost", port=0, tls_cert=cert, tls_key=key, token="t") as handle:
        target = f"grpcs://localhost:{handle.port}"
        with RemoteReranker(target, token="t", root_certificates=cert) as client:
            ref = LocalReranker(device="cpu").select(Q, X, 4)
            assert client.select(Q, X, 4).indices.tolist() == ref.indices.tolist()
        plain = RemoteReranker(f"grpc://localhost:{handle.port}", retries=0, timeout=3)
        with plain, pytest.raises(errors.RerankerUnavailableError):
            plain.select(Q, X, 4)


def test_unreadable_pem_is_a_config_error_naming_the_option(
    self_signed: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = self_signed
    missing = tmp_path / "absent.pem"
    with pytest.raises(errors.ConfigError, match=r"tls_cert: cannot read .*absent\.pem"):
        serve(port=0, tls_cert=missing, tls_key=key)
    with pytest.raises(errors.ConfigError, match="tls_key: cannot read"):
        serve(port=0, tls_cert=cert, tls_key=tmp_path)  # a folder, not a file
    with pytest.raises(errors.ConfigError, match=r"root_certificates: cannot read .*absent\.pem"):
        RemoteReranker("grpcs://localhost:1", root_certificates=missing)


# --- deadlines, overload, graceful shutdown ----------------------------------------------------


def test_no_work_started_past_the_deadline() -> None:
    gate = Gate()
    with serve(port=0, selector=gate, max_workers=1) as handle:
        target = f"grpc://127.0.0.1:{handle.port}"
        with RemoteReranker(target) as client:
            blocker = threading.Thread(target=client.select, args=(Q, X, BLOCK_N))
            blocker.start()
            assert gate.entered.wait(10)
            with pytest.raises(errors.SelectionCancelledError) as info:
                client.select(Q, X, 3, timeout=0.3)  # queued behind the blocker, then expires
            assert info.value.reason == "deadline"
            gate.release.set()
            blocker.join(10)
            client.select(Q, X, 2)  # runs after the expired call in the single worker
        assert 3 not in gate.ns


def test_batch_stops_at_the_deadline_between_groups() -> None:
    gate = Gate()
    with serve(port=0, selector=gate) as handle:
        with RemoteReranker(f"grpc://127.0.0.1:{handle.port}") as client:
            done = threading.Event()

            def expire() -> None:
                # Two option groups: n=BLOCK_N blocks past the deadline, n=3 must never start.
                with pytest.raises(errors.SelectionCancelledError) as info:
                    client._call(
                        client._stub.SelectBatch,
                        pb.SelectBatchRequest(requests=[_request(n=BLOCK_N), _request(n=3)]),
                        0.3,
                    )
                assert info.value.reason == "deadline"
                done.set()

            caller = threading.Thread(target=expire)
            caller.start()
            assert gate.entered.wait(10) and done.wait(10)
            gate.release.set()
            caller.join(10)
            registry = handle.metrics.registry
            labels = {"method": "SelectBatch", "code": "DEADLINE_EXCEEDED"}
            deadline = time.monotonic() + 10
            while not registry.get_sample_value("qdrant_sift_rpc_requests_total", labels):
                assert time.monotonic() < deadline, "the server never gave up on the batch"
                time.sleep(0.01)
        assert BLOCK_N in gate.ns and 3 not in gate.ns


def test_overload_is_resource_exhausted() -> None:
    gate = Gate()
    handle = serve(port=0, selector=gate, max_concurrent_rpcs=1)
    with handle, RemoteReranker(f"grpc://127.0.0.1:{handle.port}") as client:
        blocker = threading.Thread(target=client.select, args=(Q, X, BLOCK_N))
        blocker.start()
        assert gate.entered.wait(10)
        with pytest.raises(errors.RemoteRerankerError) as info:
            client.select(Q, X, 3)
        assert info.value.code == "RESOURCE_EXHAUSTED"
        gate.release.set()
        blocker.join(10)
        assert client.select(Q, X, 3).indices.shape == (3,)


def test_graceful_stop_drains_in_flight_call() -> None:
    gate = Gate()
    handle = serve(port=0, selector=gate)
    target = f"grpc://127.0.0.1:{handle.port}"
    result: dict[str, Any] = {}
    with RemoteReranker(target, timeout=30) as client, RemoteReranker(target, retries=0) as probe:

        def in_flight() -> None:
            result["selection"] = client.select(Q, X, BLOCK_N)

        caller = threading.Thread(target=in_flight)
        caller.start()
        assert gate.entered.wait(10)
        stopper = threading.Thread(target=handle.stop, kwargs={"grace": 30, "unready_for": 1.0})
        stopper.start()
        deadline = time.monotonic() + 10
        while probe.health() != "NOT_SERVING":  # readiness flips before the port closes
            assert time.monotonic() < deadline
        try:
            while True:  # then new calls are refused while the first one is still running
                try:
                    probe.select(Q, X, 2)
                except errors.RerankerUnavailableError:
                    break
                except errors.SelectionCancelledError as exc:  # a call racing the close
                    assert exc.reason == "cancelled"
                    break
                assert time.monotonic() < deadline
            assert caller.is_alive()
        finally:
            gate.release.set()
        caller.join(10)
        stopper.join(30)
    assert not stopper.is_alive() and handle.wait(0)
    ref = LocalReranker(device="cpu").select(Q, X, BLOCK_N)
    assert result["selection"].indices.tolist() == ref.indices.tolist()


# --- the generated code is reproducible --------------------------------------------------------


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", "scripts/gen_proto.sh", str(tmp_path)], cwd=REPO, check=True, env=env)
    committed = REPO / "reranker" / "proto" / "qdrant_sift" / "v1"
    for name in ("reranker_pb2.py", "reranker_pb2.pyi", "reranker_pb2_grpc.py"):
        fresh = tmp_path / "qdrant_sift" / "v1" / name
        assert filecmp.cmp(fresh, committed / name, shallow=False), f"{name}: run gen_proto.sh"


class _Peers(logging.Handler):
    """The client address of every call, from the service's per-call log record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.peers: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "rpc" and getattr(record, "method", "") == "Select":
            self.peers.append(str(record.peer))


@pytest.mark.parametrize("age", [0.3, None], ids=["max-age", "no-age"])
def test_connections_age_out_without_failing_calls(age: float | None) -> None:
    """With a short max connection age the server closes the connection (GOAWAY) and the client
    reconnects from a new port, so the calls after the age come from a new peer; calls keep
    succeeding. Without the option the same connection serves every call (the control)."""
    from qdrant_sift.reranker import RemoteReranker, serve

    rng = np.random.default_rng(3)
    query, cands = rng.standard_normal(8, dtype=np.float32), rng.standard_normal((20, 8))
    logger = logging.getLogger("qdrant_sift.reranker.service")
    seen, level = _Peers(), logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    handle = serve(port=0, device="cpu", max_connection_age=age)
    try:
        with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=10) as remote:
            picks = [remote.select(query, cands, 3).indices.tolist() for _ in range(3)]
            time.sleep(1.0)  # past the age: the server sends GOAWAY, the channel reconnects
            picks += [remote.select(query, cands, 3).indices.tolist() for _ in range(3)]
    finally:
        handle.stop(0)
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert all(p == picks[0] for p in picks)
    before, after = seen.peers[:3], seen.peers[3:]
    assert len(after) == 3 and len(set(before)) == 1, seen.peers
    if age is None:
        assert set(after) == set(before), seen.peers
    else:
        assert before[0] not in after, f"no reconnect after the connection age: {seen.peers}"
