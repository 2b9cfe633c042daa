"""Fault injection: SIGTERM to a real ``qdrant-sift serve`` process under a load of maximal calls.

Issue 12 item 2: with ``--grace 1`` the process must exit within grace + 1 s, every call in
flight answered (OK or CANCELLED) and none logged as OK after it was cancelled. Item 11: from
SIGTERM on, no new call is admitted (before, the main loop noticed the signal up to 0.5 s
late and kept serving meanwhile).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any, NamedTuple

import grpc
import numpy as np

from qdrant_sift.reranker._matrix import to_matrix
from qdrant_sift.reranker._server import _CANCEL_MARGIN as CANCEL_MARGIN
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

GRACE = 1.0
CALLS = 4


_ARGS = (
    "--grace", str(GRACE), "--max-workers", str(CALLS + 1), "--max-cost", "1e14",
    "--metrics-port", "0", "--health-port", "0",  # as deployed: all three ports open
)  # fmt: skip


class _Run(NamedTuple):
    took: float
    late: str
    outcome: dict[str, Any]
    records: list[dict[str, Any]]


class _Server:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "QDRANT_SIFT_TOKEN": "", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qdrant_sift.reranker._cmd_serve", "--host", "127.0.0.1",
             "--port", "0", "--device", "cpu", "--torch-threads", "1", "--log-level", "debug",
             *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"msg": "non-json", "line": line})

    def wait_for(self, msg: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        """The first record (seen before or arriving within ``timeout``) that matches."""

        def match(rec: dict[str, Any]) -> bool:
            return rec["msg"] == msg and all(rec.get(k) == v for k, v in fields.items())

        for rec in self.seen:
            if match(rec):
                return rec
        deadline = time.monotonic() + timeout
        while True:
            rec = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            self.seen.append(rec)
            if match(rec):
                return rec

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.lines.get(timeout=2))
            except queue.Empty:
                return self.seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _sigterm_under_load() -> _Run:
    """One run: SIGTERM a loaded server; what happened (checked by :func:`_check`)."""
    server = _Server(*_ARGS)
    try:
        port = server.wait_for("listening")["port"]
        rng = np.random.default_rng(5)
        X = rng.standard_normal((2000, 64)).astype(np.float32)
        heavy = pb.SelectRequest(query=to_matrix(X[:1] + 0.1), candidates=to_matrix(X), n=10_000)
        outcome: dict[str, Any] = {}

        def call(i: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RerankerStub(channel)
                try:
                    stub.Select(heavy, metadata=[("x-request-id", f"heavy-{i}")], timeout=120)
                    outcome[f"heavy-{i}"] = "OK"
                except grpc.RpcError as exc:
                    outcome[f"heavy-{i}"] = exc.code().name

        callers = [threading.Thread(target=call, args=(i,)) for i in range(CALLS)]
        for t in callers:
            t.start()
        for i in range(CALLS):
            server.wait_for("rpc start", request_id=f"heavy-{i}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            small = pb.SelectRequest(query=to_matrix(X[:1]), candidates=to_matrix(X[:50]), n=3)
            stub = pb_grpc.RerankerStub(channel)
            stub.Select(small, timeout=30)  # connected and served before the signal
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            try:
                stub.Select(small, metadata=[("x-request-id", "late")], timeout=10)
                late = "OK"
            except grpc.RpcError as exc:
                late = exc.code().name
        assert server.proc.wait(timeout=60) == 0
        took = time.monotonic() - sent
        for t in callers:
            t.join(30)
        records = server.drain()
    finally:
        server.kill()
    print(f"SIGTERM -> exit {took:.2f} s (grace {GRACE} s); load {os.getloadavg()[0]:.2f}")
    for rec in records:  # the server's own timeline, for a failure's report
        print(rec.get("ts"), rec.get("msg"), rec.get("request_id") or "", rec.get("code") or "",
              rec.get("major_faults", ""))  # fmt: skip
    return _Run(took, late, outcome, records)


def _check(run: _Run) -> None:
    assert run.late == "UNAVAILABLE", run.late  # before: admitted and answered OK
    assert run.took <= GRACE + 1.0, f"exit {run.took:.2f} s after SIGTERM with --grace {GRACE}"
    assert sorted(run.outcome) == [f"heavy-{i}" for i in range(CALLS)]
    assert set(run.outcome.values()) <= {"OK", "CANCELLED"}, run.outcome
    logged = {r["request_id"]: r["code"] for r in run.records if r["msg"] == "rpc"}
    for rid, code in run.outcome.items():
        assert logged.get(rid) == code, (rid, code, logged.get(rid))  # before: logged OK
    assert "late" not in logged or logged["late"] != "OK"


def _stalled(records: list[dict[str, Any]]) -> str:
    """Why the server process was stalled while draining, or "" when it was not: one of its own
    timed waits ran more than 0.25 s long (nothing in the drain can make a timer late; a host
    that pages the process out can), or it took major page faults."""
    at = {r["msg"]: datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) for r in records
          if r["msg"] in ("draining", "grace period over: cancelling calls in flight",
                          "calls still running after the grace period")}  # fmt: skip
    over = at.get("grace period over: cancelling calls in flight")
    if "draining" in at and over is not None:
        late = (over - at["draining"]).total_seconds() - GRACE
        if late > 0.25:
            return f"the grace timer fired {late:.2f} s late"
    still = at.get("calls still running after the grace period")
    if over is not None and still is not None:
        late = (still - over).total_seconds() - CANCEL_MARGIN
        if late > 0.25:
            return f"the cancel wait ended {late:.2f} s late"
    faults = sum(int(r.get("major_faults") or 0) for r in records if r["msg"] == "stopped")
    return f"{faults} major page faults while draining" if faults else ""


def _rehearse() -> None:
    """Start, serve and SIGTERM a server once, untimed: the drain's code (gRPC's shutdown in its
    C core, signal handling, logging) then sits in the page cache for the timed run, instead of
    being read from disk for the first time in the middle of it."""
    server = _Server(*_ARGS)
    try:
        port = server.wait_for("listening")["port"]
        x = np.ones((4, 8), np.float32)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RerankerStub(channel)
            stub.Select(pb.SelectRequest(query=to_matrix(x[:1]), candidates=to_matrix(x), n=2),
                        timeout=30)  # fmt: skip
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.kill()


def test_sigterm_under_load_exits_within_grace_plus_one_second() -> None:
    # Twice in full runs (CI 2.63 s; locally 2.23 s, calls answered UNAVAILABLE by gRPC's own
    # cut-off) and once more after a fix of the cancel latency of long selections
    # (_sift_compiled.chunk_end, which bounds it at a few ms), the server process itself stalled for
    # ~1 s while draining: its own timers fired late and it sat in uninterruptible sleep, on a
    # host that keeps its page cache under 1 GB and pages files back in from disk. Never alone,
    # idle or beside two CPU hogs (1.07-1.14 s). A rehearsal first reads the drain's code in;
    # a run stalled all the same, and only such a run, gets one more try; a late exit without a
    # stall fails at once.
    _rehearse()
    run = _sigterm_under_load()
    try:
        _check(run)
    except AssertionError:
        why = _stalled(run.records)
        if not why:
            raise
        print(f"the server was stalled by its host ({why}): one more try")
        _check(_sigterm_under_load())
