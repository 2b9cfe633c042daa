"""Seconds per new token, idle and beside a competing CPU job, per OpenMP wait policy.

Issue 12 item 6: on 2 cores shared with another 2-thread job, generation collapsed (8 new tokens
from a 1,931-token prompt took 16–54 s instead of ~3 s). The suspect is OpenMP threads that
spin at barriers while their partner is descheduled. For each wait policy (``PASSIVE``, what
qdrant-sift sets by default, and ``ACTIVE``/unset, GNU OpenMP's spinning) and each prompt length,
a fresh process (the policy is read when torch loads) answers with the KV cache, greedy, and
reports seconds per new token (prefill included); then the same with a competing job of
``--load-threads`` busy threads. Both are confined to the first ``--cpus`` CPUs (default 2, the
issue's machine). The target: loaded ≤ 3× idle.

Run it on a quiet machine; it is CPU-heavy for several minutes and meaningless beside other
work (the table prints the load average seen at the start of each row).

    .venv/bin/python bench/bench_contention.py                 # SmolLM2-135M, 64/512/2048 tokens
    .venv/bin/python bench/bench_contention.py --quick --model tiny   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = ["main"]

_CHILD = r"""
import json, os, sys, time, inspect
policy, model_name, prompt_tokens, new_tokens, threads = sys.argv[1:6]
if policy != "unset":
    os.environ["OMP_WAIT_POLICY"] = policy
import torch
torch.set_num_threads(int(threads))
from qdrant_sift.finetune import TestTimeTuner, TuneConfig, load_model
if model_name == "tiny":
    from qdrant_sift.eval import tiny_model
    model, tok = tiny_model(seed=0, max_positions=4096)
    tok.chat_template = None
else:
    model, tok = load_model(None if model_name == "smollm2" else model_name, device="cpu")
tuner = TestTimeTuner(model, tok, TuneConfig())
import argparse, dataclasses, textwrap
words = (inspect.getsource(argparse) + inspect.getsource(dataclasses)).split()
ids = tok(" ".join(words), add_special_tokens=False)["input_ids"][: int(prompt_tokens)]
prompt = tok.decode(ids)
tuner.generate(prompt, max_new_tokens=1, chat_template=False)  # warm-up
start = time.perf_counter()
tuner.generate(prompt, max_new_tokens=int(new_tokens), chat_template=False,
               min_new_tokens=int(new_tokens))
seconds = time.perf_counter() - start
print(json.dumps({"s_per_token": seconds / int(new_tokens)}))
"""

_LOAD = r"""
import os, sys, threading
n = int(sys.argv[1])
def spin():
    x = 0
    while True:
        x += 1
# Busy threads in a process of their own (the GIL would serialise Python threads, so fork).
for _ in range(n - 1):
    if os.fork() == 0:
        spin()
spin()
"""


def _pin(cpus: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))

    return pin


def _run_child(policy: str, model: str, prompt: int, new: int, threads: int, cpus: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    args = [sys.executable, "-c", _CHILD, policy, model, str(prompt), str(new), str(threads)]
    out = subprocess.run(
        args, capture_output=True, text=True, env=env, check=True, timeout=3600,
        preexec_fn=_pin(cpus),
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["s_per_token"])


def _start_load(threads: int, cpus: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _LOAD, str(threads)], start_new_session=True, preexec_fn=_pin(cpus)
    )


def _stop_load(proc: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or an HF id/path")
    parser.add_argument("--prompts", default="64,512,2048", help="prompt lengths in tokens")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the generator")
    parser.add_argument("--load-threads", type=int, default=2, help="busy threads beside (0: none)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs both jobs are confined to")
    parser.add_argument("--policies", default="PASSIVE,unset", help="OMP_WAIT_POLICY values")
    parser.add_argument("--quick", action="store_true", help="prompt 64, 2 new tokens")
    args = parser.parse_args(argv)
    prompts = [64] if args.quick else [int(p) for p in args.prompts.split(",")]
    new = 2 if args.quick else args.new_tokens
    print(
        "| wait policy | prompt tokens | idle s/token | loaded s/token | loaded / idle | "
        "load avg (1 min) |\n|---|---|---|---|---|---|"
    )
    for policy in args.policies.split(","):
        for prompt in prompts:
            load1 = os.getloadavg()[0]
            idle = _run_child(policy, args.model, prompt, new, args.threads, args.cpus)
            if args.load_threads <= 0:  # only the machine's own load
                print(f"| {policy} | {prompt} | {idle:.3f} | – | – | {load1:.1f} |", flush=True)
                continue
            load = _start_load(args.load_threads, args.cpus)
            try:
                time.sleep(0.5)
                loaded = _run_child(policy, args.model, prompt, new, args.threads, args.cpus)
            finally:
                _stop_load(load)
            print(
                f"| {policy} | {prompt} | {idle:.3f} | {loaded:.3f} | {loaded / idle:.1f}× | "
                f"{load1:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
