"""``qdrant-sift serve`` as a real process: JSON logs, SIGTERM drains an in-flight call, exit 0."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

import grpc
import numpy as np
import pytest

from qdrant_sift.reranker import RemoteReranker, select
from qdrant_sift.reranker._cmd_serve import register
from qdrant_sift.reranker._matrix import to_matrix
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc


def test_register_adds_serve_with_the_documented_flags() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "9090", "--token", "T",
         "--tls-cert", "c.pem", "--tls-key", "k.pem", "--device", "cpu", "--max-workers", "3",
         "--max-concurrent-rpcs", "9", "--qdrant-url", "http://q:6333", "--qdrant-api-key", "K"]
    )  # fmt: skip
    assert args.func.__name__ == "run" and args.port == 0 and args.metrics_port == 9090
    assert (args.token, args.device, args.max_workers, args.max_concurrent_rpcs) == (
        "T",
        "cpu",
        3,
        9,
    )
    assert (args.qdrant_url, args.qdrant_api_key, args.tls_cert) == ("http://q:6333", "K", "c.pem")


def test_bad_tls_flags_exit_2() -> None:
    env = {**os.environ, "QDRANT_SIFT_TOKEN": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "qdrant_sift.reranker._cmd_serve", "--port", "0",
         "--tls-cert", "only-a-cert.pem"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "both a certificate and a key" in proc.stderr


def test_sigterm_drains_and_exits_zero() -> None:
    env = {**os.environ, "QDRANT_SIFT_TOKEN": "tok", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdrant_sift.reranker._cmd_serve", "--host", "127.0.0.1",
         "--port", "0", "--metrics-port", "0", "--log-level", "debug", "--device", "cpu",
         "--torch-threads", "1", "--grace", "60"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                lines.put(json.loads(line))
            except json.JSONDecodeError:
                lines.put({"msg": "non-json", "line": line})

    threading.Thread(target=pump, daemon=True).start()

    def wait_for(msg: str, **fields: Any) -> dict[str, Any]:
        while True:
            rec = lines.get(timeout=60)
            assert rec["msg"] != "non-json", rec
            if rec["msg"] == msg and all(rec.get(k) == v for k, v in fields.items()):
                return rec

    try:
        listening = wait_for("listening")
        port, metrics_port = listening["port"], listening["metrics_port"]
        assert isinstance(metrics_port, int) and metrics_port > 0
        rng = np.random.default_rng(3)
        X = rng.standard_normal((20_000, 128)).astype(np.float32)  # long enough to be in flight
        q = X[:1] + 0.1
        with RemoteReranker(f"grpc://127.0.0.1:{port}", token="tok") as client:
            assert client.select(q, X[:50], 5).indices.shape == (5,)
        result: dict[str, Any] = {}

        def heavy() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RerankerStub(channel)
                req = pb.SelectRequest(query=to_matrix(q), candidates=to_matrix(X), n=150)
                md = [("authorization", "Bearer tok"), ("x-request-id", "heavy")]
                result["resp"] = stub.Select(req, metadata=md, timeout=120)

        caller = threading.Thread(target=heavy)
        caller.start()
        wait_for("rpc start", request_id="heavy")
        proc.send_signal(signal.SIGTERM)
        caller.join(120)
        assert proc.wait(timeout=120) == 0
        assert wait_for("rpc", request_id="heavy")["code"] == "OK"
        wait_for("stopped")
        want = select(q, X, 150, device="cpu")
        assert list(result["resp"].indices) == want.indices.tolist()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flag", ["--max-k", "--max-workers"])
def test_limit_flags_reject_nonsense(flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qdrant_sift.reranker._cmd_serve", "--port", "0", flag, "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "must be" in proc.stderr
