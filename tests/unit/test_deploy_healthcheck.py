"""deploy/healthcheck.py against a real grpcio server with the standard health service.

The image's Docker HEALTHCHECK runs this script; here it talks to a loopback server whose
status the test flips, plainly and over TLS, in-process and as the subprocess Docker would run.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "healthcheck.py"
SERVICE = "qdrant_sift.v1.Reranker"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hc = _load()


class _Server:
    def __init__(self, creds: grpc.ServerCredentials | None = None) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        addr = "127.0.0.1:0"
        if creds is None:
            self.port = self.server.add_insecure_port(addr)
        else:
            self.port = self.server.add_secure_port(addr, creds)
        self.server.start()

    def set(self, status: int, service: str = "") -> None:
        self.health.set(service, status)

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.set(health_pb2.HealthCheckResponse.SERVING)
    srv.set(health_pb2.HealthCheckResponse.SERVING, SERVICE)
    yield srv
    srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serving_is_healthy(server: _Server) -> None:
    assert hc.check("127.0.0.1", server.port) == "SERVING"
    assert hc.main(["--port", str(server.port)]) == hc.HEALTHY
    assert hc.main(["--port", str(server.port), "--service", SERVICE]) == hc.HEALTHY


def test_not_serving_is_unhealthy(server: _Server) -> None:
    server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    assert hc.check("127.0.0.1", server.port) == "NOT_SERVING"
    assert hc.main(["--port", str(server.port)]) == hc.UNHEALTHY
    # The named service is still up and is reported on its own.
    assert hc.main(["--port", str(server.port), "--service", SERVICE]) == hc.HEALTHY


def test_unknown_service_is_unhealthy(server: _Server) -> None:
    status = hc.check("127.0.0.1", server.port, service="no.such.Service")
    assert status == "UNREACHABLE: NOT_FOUND"
    assert hc.main(["--port", str(server.port), "--service", "no.such.Service"]) == 1


def test_nothing_listening_is_unhealthy() -> None:
    port = _free_port()
    assert hc.check("127.0.0.1", port, timeout=1.0).startswith("UNREACHABLE")
    assert hc.main(["--port", str(port), "--timeout", "1"]) == hc.UNHEALTHY


def test_env_fallback_for_port(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_SIFT_HEALTH_PORT", str(server.port))
    assert hc.main([]) == hc.HEALTHY


def test_unreadable_ca_is_unhealthy(server: _Server, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    assert hc.main(["--port", str(server.port), "--tls-ca", str(missing)]) == hc.UNHEALTHY


def test_runs_as_docker_runs_it(server: _Server) -> None:
    """The exact HEALTHCHECK command: a fresh interpreter, the port from the environment."""
    env = {"QDRANT_SIFT_HEALTH_PORT": str(server.port), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert b"healthy: SERVING" in ok.stderr
    server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, timeout=60)
    assert bad.returncode == 1
    assert b"unhealthy: NOT_SERVING" in bad.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a cert")
def test_tls(tmp_path: Path) -> None:
    key, crt = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(crt), "-subj", "/CN=reranker.test",
            "-addext", "subjectAltName=DNS:reranker.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    creds = grpc.ssl_server_credentials([(key.read_bytes(), crt.read_bytes())])
    srv = _Server(creds)
    try:
        srv.set(health_pb2.HealthCheckResponse.SERVING)
        base = ["--port", str(srv.port), "--timeout", "5"]
        tls = [*base, "--tls-ca", str(crt), "--server-name", "reranker.test"]
        assert hc.main(tls) == hc.HEALTHY
        # Plaintext against a TLS port, or the wrong name, is unhealthy, never a crash.
        assert hc.main(base) == hc.UNHEALTHY
        assert hc.main([*base, "--tls-ca", str(crt), "--server-name", "other.test"]) == 1
        srv.set(health_pb2.HealthCheckResponse.NOT_SERVING)
        assert hc.main(tls) == hc.UNHEALTHY
    finally:
        srv.stop()
