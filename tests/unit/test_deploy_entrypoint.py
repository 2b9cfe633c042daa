"""The image's CMD, run as the container would run it, minus the container.

The reranker images start ``qdrant-sift serve`` with the arguments of the Dockerfile's CMD and
judge health with deploy/healthcheck.py; Kubernetes probes HTTP ``/health`` and ``/ready``.
Here the same arguments (ports swapped for free ones, since tests share the machine) start the
real server in a subprocess, embedder included; the health script must see SERVING, /metrics,
``/health`` and ``/ready`` must answer, a Cohere-shaped ``/v2/rerank`` must pick with the token
and be refused without it, and SIGTERM (what ``docker stop`` and Kubernetes send) must end it
with exit 0 after health turned NOT_SERVING.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile.reranker-cpu"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image_cmd() -> list[str]:
    cmds = re.findall(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    return list(json.loads(cmds[-1]))


def _cli_commands() -> set[str]:
    from qdrant_sift.client.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _serve_command() -> list[str]:
    """``qdrant-sift serve`` as the image's ENTRYPOINT runs it."""
    return [sys.executable, "-m", "qdrant_sift.client.cli", "serve"]


def test_console_script_has_the_image_commands() -> None:
    """ENTRYPOINT ["qdrant-sift"] with CMD serve (reranker) and ingest (ingest image)."""
    missing = {"serve", "ingest"} - _cli_commands()
    assert not missing, f"not wired into client/cli.py: {sorted(missing)}; the images need them"


def _health(port: int) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "QDRANT_SIFT_HEALTH_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout", "2"], env=env, capture_output=True
    )


def _http(url: str, body: dict[str, object] | None = None, token: str = "") -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_image_cmd_serves_health_http_and_metrics_then_drains_on_sigterm() -> None:
    cmd = _image_cmd()
    assert cmd[0] == "serve"
    port, metrics, http = _free_port(), _free_port(), _free_port()
    args = list(cmd[1:])
    args[args.index("--port") + 1] = str(port)
    args[args.index("--http-port") + 1] = str(http)
    args[args.index("--metrics-port") + 1] = str(metrics)
    args[args.index("--host") + 1] = "127.0.0.1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QDRANT_SIFT_TOKEN": "entrypoint-test"}
    env.pop("QDRANT_URL", None)
    proc = subprocess.Popen(
        [*_serve_command(), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            result = _health(port)
            if result.returncode == 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.5)
        assert b"SERVING" in result.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert b"# HELP" in resp.read()
        base = f"http://127.0.0.1:{http}"
        assert _http(f"{base}/health") == (200, b'{"status":"ok"}')  # the probes, no token
        assert _http(f"{base}/ready") == (200, b'{"status":"ready"}')
        docs = ["a cat purrs on the mat", "stock prices fell", "kittens are young cats"]
        body = {"model": "sift", "query": "cats", "documents": docs, "top_n": 2}
        status, raw = _http(f"{base}/v2/rerank", body, token="entrypoint-test")
        assert status == 200, raw
        picks = [r["index"] for r in json.loads(raw)["results"]]
        assert len(picks) == 2 and 1 not in picks  # the image's embedder ranks by meaning
        assert _http(f"{base}/v2/rerank", body)[0] == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _health(port).returncode == 1  # gone: unhealthy, not a crash of the script
        with pytest.raises(OSError):
            _http(f"{base}/health")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
